"""Pre-tokenization of prompt records with the target model's chat template.

Why here: every A/B arm must get the same token ids (chat templating outside the engines removes template, BOS
and tokenizer drift), so prompts are rendered once, by this module, and the ids are what engines receive.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from specplug.assets.datasets import PromptRecord

ToolStyle = Literal["auto", "native", "system_prompt"]

TOOL_SYSTEM_PROMPT = (
    "You can call functions to answer the user. The available functions are listed inside <tools></tools>, one "
    "JSON description per line:\n<tools>\n{tools}\n</tools>\n\n"
    "To call functions, reply only with one JSON object per call, each inside <tool_call></tool_call> tags:\n"
    '<tool_call>{{"name": <function-name>, "arguments": <arguments-object>}}</tool_call>'
)

# The one worked example placed before the real question. A fixed example (not taken from the record) keeps the
# prompt free of gold values and identical in shape across records.
EXAMPLE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
EXAMPLE_USER = "(Example; the function below is not among your tools.) What is the weather in Paris, in celsius?"
EXAMPLE_CALL: dict[str, Any] = {"name": "get_current_weather", "arguments": {"city": "Paris", "unit": "celsius"}}


def supports_tools(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template reads a `tools` variable (i.e. renders tool definitions itself)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, Mapping):
        template = "".join(str(t) for t in template.values())
    return isinstance(template, str) and "tools" in template


def format_tool_call(name: str, arguments: Any) -> str:
    """The tool-call text the system-prompt style teaches: <tool_call>{"name": ..., "arguments": {...}}</tool_call>."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "</tool_call>"


def _flatten_tool_turns(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Assistant `tool_calls` -> <tool_call> text, `tool` results -> a user turn with <tool_response>; then merge
    consecutive same-role turns, so templates that only know system/user/assistant (and strict alternation) work."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        role, content = msg["role"], msg.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
        if role == "assistant" and msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = call.get("function", call)
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    with contextlib.suppress(ValueError):  # not JSON: keep the raw text
                        args = json.loads(args)
                calls.append(format_tool_call(fn["name"], args))
            content = "\n".join(([content.strip()] if content else []) + calls)
        elif role in ("tool", "function", "ipython"):
            role, content = "user", f"<tool_response>{content or ''}</tool_response>"
        content = content or ""
        if out and out[-1]["role"] == role and role != "system":
            out[-1]["content"] += "\n\n" + content
        else:
            out.append({"role": role, "content": content})
    return out


def system_prompt_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages for a template without tool support (SmolLM2's plain ChatML, Gemma's turns).

    The tool list goes into the system prompt (after any system text the record has), followed by ONE worked
    example — a user turn and an assistant turn answering `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
    — before the real conversation. SmolLM2-135M answers in prose from the tool list alone, and in the tool-call
    format once it has seen the example (often with a wrong name or key: the realistic case for a drafter).
    Tool calls and results already in the history are rendered in the same tags.
    """
    flat = _flatten_tool_turns(messages)
    if not tools:
        return flat
    system_parts = []
    if flat and flat[0]["role"] == "system":
        system_parts.append(flat.pop(0)["content"])
    tool_lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    system_parts.append(TOOL_SYSTEM_PROMPT.format(tools=tool_lines))
    example = [
        {"role": "user", "content": EXAMPLE_USER},
        {"role": "assistant", "content": format_tool_call(EXAMPLE_CALL["name"], EXAMPLE_CALL["arguments"])},
    ]
    return [{"role": "system", "content": "\n\n".join(p for p in system_parts if p)}, *example, *flat]


def render_text(record: PromptRecord, tokenizer: Any, *, tool_style: ToolStyle = "auto") -> str:
    """The chat-templated prompt text (generation prompt appended); see render_prompt."""
    native = tool_style == "native" or (tool_style == "auto" and supports_tools(tokenizer))
    if tool_style not in ("auto", "native", "system_prompt"):
        raise ValueError(f"tool_style must be auto, native or system_prompt, got {tool_style!r}")
    if native:
        kwargs = {"tools": record.tools} if record.tools else {}
        return tokenizer.apply_chat_template(record.messages, add_generation_prompt=True, tokenize=False, **kwargs)
    messages = system_prompt_messages(record.messages, record.tools)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def render_prompt(record: PromptRecord, tokenizer: Any, *, tool_style: ToolStyle = "auto") -> list[int]:
    """Token ids of `record` under the target tokenizer's chat template, ready to send to any engine.

    Equivalent to `tokenizer.apply_chat_template(messages, add_generation_prompt=True)`; the template adds BOS
    itself when the model wants one, so the text is tokenized without extra special tokens. With tools and a
    template that has no tool support (`tool_style="auto"` decides by looking for `tools` in the template, e.g.
    SmolLM2's plain ChatML), tools are written into the system prompt followed by one worked tool-call example
    before the real question (`system_prompt_messages`); reports must say that prompts were rendered this way.
    """
    text = render_text(record, tokenizer, tool_style=tool_style)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
