"""Start a vLLM OpenAI server for a test and stop it afterwards (shared by the server tests)."""

from __future__ import annotations

import urllib.error
import urllib.request

from specplug.bench.openai_server import free_port, health, running_server

__all__ = ["assert_refused_and_alive", "bad_requests", "free_port", "refusals", "running_server"]


def _send(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def bad_requests(model: str) -> list[tuple[str, str, bytes]]:
    """(name, endpoint, body) of requests a server must refuse with a 4xx and survive: malformed JSON, wrong types
    and ranges, out-of-vocabulary token ids, an unknown model, malformed tools and malformed specplug extra args."""
    import json

    chat = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    completion = {"model": model, "prompt": "Hello", "max_tokens": 8}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    cases = [
        ("malformed json", "/v1/completions", b'{"model": "x", "prompt": '),
        ("max_tokens a string", "/v1/completions", {**completion, "max_tokens": "many"}),
        ("max_tokens negative", "/v1/completions", {**completion, "max_tokens": -5}),
        ("max_tokens past the context", "/v1/completions", {**completion, "max_tokens": 10**9}),
        ("temperature negative", "/v1/completions", {**completion, "temperature": -1}),
        ("token id out of vocabulary", "/v1/completions", {**completion, "prompt": [10**9]}),
        ("unknown model", "/v1/completions", {**completion, "model": "no-such-model"}),
        ("n zero", "/v1/completions", {**completion, "n": 0}),
        ("seed a string", "/v1/completions", {**completion, "seed": "x"}),
        ("cache_salt a number", "/v1/completions", {**completion, "cache_salt": 5}),
        ("messages a string", "/v1/chat/completions", {**chat, "messages": "hello"}),
        ("tools a string", "/v1/chat/completions", {**chat, "tools": "notalist"}),
        ("tool name a number", "/v1/chat/completions", {**chat, "tools": [{"type": "function", "function": {}}]}),
        ("tool_choice an unknown tool", "/v1/chat/completions", {**chat, "tools": [tool], "tool_choice": {
            "type": "function", "function": {"name": "nope"}}}),
        ("toolspec extra args a number", "/v1/completions", {**completion, "vllm_xargs": {"toolspec": 5}}),
    ]  # fmt: skip
    return [(name, path, body if isinstance(body, bytes) else json.dumps(body).encode()) for name, path, body in cases]


def refusals(base: str, model: str) -> dict[str, tuple[int, int]]:
    """name -> (the server's status for that bad request, /health's status right after it)."""
    found = {}
    for name, path, body in bad_requests(model):
        found[name] = (_send(base + path, body), health(base, timeout=30))
    return found


def assert_refused_and_alive(base: str, model: str) -> None:
    """Every bad request gets a 4xx and the server stays healthy (the reliability row of every method)."""
    found = refusals(base, model)
    wrong = {name: codes for name, codes in found.items() if not (400 <= codes[0] < 500 and codes[1] == 200)}
    assert not wrong, f"bad requests not refused with a 4xx, or the server unhealthy after them: {wrong}"
