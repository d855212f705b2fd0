"""Shared inputs for the TensorRT-LLM ToolSpec adapter tests: tools, answers, requests."""

from __future__ import annotations

from typing import Any

from .fake_trtllm import FakeLlmRequest, LlmRequestState

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
BOOKING = {
    "type": "function",
    "function": {
        "name": "book_trip",
        "parameters": {
            "type": "object",
            "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}},
            "required": ["origin", "destination"],
        },
    },
}
TOOLS = [WEATHER]
CALL_PREFIX = '<tool_call>{"name": "'
WEATHER_ANSWER = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>'
PROMPT = "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def generating(
    tokenizer: Any,
    request_id: int,
    output_text: str = "",
    *,
    prompt: str = PROMPT,
    max_new_tokens: int = 64,
    client_id: Any = None,
) -> FakeLlmRequest:
    """A request in its generation phase whose answer so far is `output_text` (at least one token)."""
    request = FakeLlmRequest(
        request_id, encode(tokenizer, prompt), max_new_tokens, end_id=tokenizer.eos_token_id, client_id=client_id
    )
    for token in encode(tokenizer, output_text) or encode(tokenizer, "<"):
        request.add_new_token(token, 0)
    request.state = LlmRequestState.GENERATION_IN_PROGRESS
    return request


def tools_by_client(request: Any) -> list[dict[str, Any]] | None:
    """A `tools_for` hook (module level: picklable): the client id names the request's tool."""
    return {"weather": [WEATHER], "booking": [BOOKING]}.get(request.py_client_id)


def tenant_by_client(request: Any) -> str | None:
    """A `tenant_for` hook: the client id is the tenant."""
    return request.py_client_id


def fail_drafts_of(core: Any, request_id: str, monkeypatch: Any) -> None:
    """Make the core drafter raise for one request (a bug in the core), and only for it."""
    real_draft = core.draft

    def flaky(rid: str, token_ids: Any, budget: int | None = None) -> list[int]:
        if rid == request_id:
            raise RuntimeError("boom in the core")
        return real_draft(rid, token_ids, budget)

    monkeypatch.setattr(core, "draft", flaky)
