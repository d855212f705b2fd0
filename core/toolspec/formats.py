"""How a model writes tool calls, so the drafter knows where a call starts, where it ends, and its key names.

- `hermes`: `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, any text around, several calls per answer
  (what specplug's BFCL prompts teach SmolLM2, whose template has no tool support).
- `hermes-nl`: the same with a newline inside the tags (Qwen2.5's chat template).
- `json`: the whole answer is one call object or an array of calls (plain JSON tool calling).
- `llama3`: the whole answer is `{"name": …, "parameters": {…}}` (Llama 3.1's JSON tool calling).
`auto` reads the tokenizer's chat template and falls back to `hermes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolCallFormat:
    name: str
    begin: str  # text that opens a call ("" = the answer itself is the JSON)
    end: str  # text that closes a call
    arguments_key: str  # "arguments" (OpenAI/Hermes) or "parameters" (Llama 3.1)
    item_separator: str = ", "  # how the model separates JSON items and keys (json.dumps default)
    key_separator: str = ": "

    @property
    def tagged(self) -> bool:
        return bool(self.begin)

    @property
    def trigger(self) -> str:
        """The part of `begin` that tells free text from a call: the opening tag without trailing whitespace."""
        return self.begin.rstrip()


FORMATS: dict[str, ToolCallFormat] = {
    "hermes": ToolCallFormat("hermes", "<tool_call>", "</tool_call>", "arguments"),
    "hermes-nl": ToolCallFormat("hermes-nl", "<tool_call>\n", "\n</tool_call>", "arguments"),
    "json": ToolCallFormat("json", "", "", "arguments"),
    "llama3": ToolCallFormat("llama3", "", "", "parameters"),
}


def detect_format(chat_template: Any) -> ToolCallFormat:
    """The format a chat template renders tool calls in; `hermes` when the template does not say."""
    if isinstance(chat_template, Mapping):
        chat_template = "".join(str(t) for t in chat_template.values())
    text = chat_template if isinstance(chat_template, str) else ""
    if "<tool_call>\\n" in text or "<tool_call>\n" in text:
        return FORMATS["hermes-nl"]
    if "<tool_call>" in text:
        return FORMATS["hermes"]
    if "<|python_tag|>" in text or '"parameters"' in text:
        return FORMATS["llama3"]
    return FORMATS["hermes"]


def resolve_format(name: str, chat_template: Any = None) -> ToolCallFormat:
    return detect_format(chat_template) if name == "auto" else FORMATS[name]
