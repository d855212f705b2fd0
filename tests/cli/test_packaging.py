"""The built wheel has exactly one top-level package, `specplug`, and carries every plugin."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_wheel_has_only_the_specplug_top_level(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("specplug-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"specplug"}
    for module in (
        "specplug/core/hookspecs.py",
        "specplug/plugins/vllm_smc/bootstrap.py",
        "specplug/plugins/sglang_csd/bootstrap.py",
        "specplug/plugins/trtllm_toolspec/plugin.py",
        "specplug/cli.py",
    ):
        assert module in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[vllm.general_plugins]" in text and "[sglang.srt.plugins]" in text and "[specplug]" in text


def test_bootstraps_and_contract_import_without_torch() -> None:
    """What `.ci/run` checks on the built wheel (only pluggy and numpy installed), here with torch blocked: the
    engine bootstraps load in every process of an engine and must not pull torch (or a method's heavy code) in."""
    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'vllm', 'sglang'): sys.modules[name] = None\n"
        "import specplug.plugins.vllm_smc.bootstrap, specplug.plugins.sglang_csd.bootstrap, specplug.core.hookspecs\n"
        "import specplug.core.plugin_manager as pm\n"
        "pm.get_plugin_manager()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
