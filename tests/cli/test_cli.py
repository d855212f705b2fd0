"""The `specplug` console script as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import specplug


def _specplug(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("specplug", path=os.path.dirname(sys.executable)) or shutil.which("specplug")
    assert exe, "the specplug console script is not installed"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=600, env=env)


def test_version_and_help() -> None:
    out = _specplug("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"specplug {specplug.__version__}"
    helped = _specplug("--help")
    assert helped.returncode == 0 and "doctor" in helped.stdout


def test_doctor_reports_engines_plugins_and_methods_truthfully() -> None:
    from specplug.core.engines import engine_status

    out = _specplug("doctor", "--json")
    report = json.loads(out.stdout)
    assert out.returncode == (1 if report["problems"] else 0)
    engines = {row["engine"]: row for row in report["engines"]}
    assert set(engines) == {"vllm", "sglang", "trtllm"}
    for name, row in engines.items():
        status = engine_status(name)
        assert (row["version"], row["tested"]) == (status.version, status.tested)
    assert {p["name"] for p in report["plugins"]} == {
        "core",
        "csd",
        "smc",
        "toolspec",
        "vllm_smc",
        "sglang_csd",
        "trtllm_toolspec",
    }
    assert {m["name"] for m in report["methods"]} >= {"smc", "csd", "toolspec"}


def test_doctor_fails_clearly_for_a_requested_engine_that_is_absent() -> None:
    from specplug.core.engines import engine_status

    if engine_status("trtllm").installed:
        pytest.skip("TensorRT-LLM is installed here")
    out = _specplug("doctor", "--engine", "trtllm")
    assert out.returncode == 1
    assert "trtllm was asked for but is not installed" in out.stdout


@pytest.mark.vllm
def test_doctor_with_real_vllm_shows_it_found_tested_and_loading() -> None:
    out = _specplug("doctor", "--engine", "vllm", "--json")
    report = json.loads(out.stdout)
    vllm = next(row for row in report["engines"] if row["engine"] == "vllm")
    assert vllm["version"] is not None and vllm["tested"] is True
    assert vllm["engine_loader"].startswith("loaded")
    assert out.returncode == 0, report["problems"]


def test_doctor_fails_when_vllm_is_required_but_specplug_is_disabled() -> None:
    from specplug.core.engines import engine_status

    if not engine_status("vllm").installed:
        pytest.skip("vllm is not installed")
    out = _specplug("doctor", "--engine", "vllm", env={**os.environ, "SPECPLUG_DISABLE": "1"})
    assert out.returncode == 1 and "did not load: disabled" in out.stdout
