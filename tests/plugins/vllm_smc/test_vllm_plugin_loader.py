"""Real vLLM: its own plugin loader finds specplug's bootstrap and runs it (in a fresh process, as vLLM does)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm

PROBE = """
import vllm
from vllm.plugins import load_general_plugins, load_plugins_by_group
found = load_plugins_by_group("vllm.general_plugins")
print("FOUND", sorted(found))
from specplug.plugins.vllm_smc.bootstrap import BOOTSTRAP
print("BEFORE", BOOTSTRAP.state)
load_general_plugins()
load_general_plugins()  # vLLM may call it again; the bootstrap must stay idempotent
print("AFTER", BOOTSTRAP.state, BOOTSTRAP.detail)
from specplug.core.plugin_manager import _shared
print("PM", sorted(_shared.load_report.loaded) if _shared else None)
"""


def test_vllm_loader_runs_the_specplug_bootstrap() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert "'specplug'" in lines["FOUND"]
    assert lines["BEFORE"] == "not-run"
    assert lines["AFTER"].startswith("loaded vllm")
    assert lines["PM"] == "['sglang_csd', 'trtllm_toolspec', 'vllm_smc']"


def test_transformers_imports_beside_vllm() -> None:
    """The torchvision/torchaudio/torchcodec trap: a CUDA torchvision beside torch+cpu breaks transformers."""
    code = "import vllm, transformers; from transformers import AutoModelForCausalLM; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
