"""BFCL single-turn call match: parse the tool calls a model wrote and check them against BFCL's AST-style gold.

Why our own matcher: bfcl-eval's checker pulls its whole dependency tree and expects its own output formats;
the bench needs one small, deterministic rule applied identically to every arm. The rule follows BFCL's AST
checker in spirit: same number of calls (matched in any order), same function names, no argument the gold does
not list, every listed argument present with an acceptable value — or absent when "" is among its acceptable
values (BFCL's marker for "optional, may be omitted"). Strings compare case-insensitively, ignoring spaces and
`,./-_*^` and treating ' as " as BFCL does; int and float compare by value; nested dicts and lists compare recursively.

Parsing is lenient about the wrapping, never about the content: `<tool_call>…</tool_call>` blocks (the format
the SmolLM2 prompt teaches, see specplug/assets/prompts.py), JSON code fences and bare JSON objects in prose are
all read; `"arguments"` may also be spelled `"parameters"` or be a JSON string.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_TAGGED = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)(?:```|\Z)", re.DOTALL)
_STRIP = re.compile(r"[ ,./\-_*^]")
_MAX_PERMUTED_CALLS = 6  # parallel gold has at most a handful of calls; beyond that, match greedily


def _json_values(text: str) -> list[Any]:
    """Every top-level JSON object or array in `text`, scanning left to right and skipping prose between them."""
    decoder = json.JSONDecoder()
    found, i = [], 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return found
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        found.append(value)
        i = end


def _as_call(value: Any) -> dict[str, Any] | None:
    """{"name": str, "arguments": dict} from one parsed JSON value, or None when it is not a call."""
    if not isinstance(value, Mapping):
        return None
    if "function" in value and isinstance(value["function"], Mapping):  # OpenAI {"type": "function", "function": …}
        value = value["function"]
    name = value.get("name")
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(name, str) or not isinstance(args, Mapping):
        return None
    return {"name": name.strip(), "arguments": dict(args)}


def _calls_in(values: Sequence[Any]) -> list[dict[str, Any]]:
    calls = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            call = _as_call(item)
            if call is not None:
                calls.append(call)
    return calls


def parse_tool_calls(text: str) -> list[dict[str, Any]]:
    """The calls in a model's reply, in order. Tagged blocks win; otherwise fenced or bare JSON in the text."""
    blocks = [m.group(1) for m in _TAGGED.finditer(text)]
    if blocks:
        return _calls_in([v for block in blocks for v in _json_values(block)])
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    if fenced:
        calls = _calls_in([v for block in fenced for v in _json_values(block)])
        if calls:
            return calls
    return _calls_in(_json_values(text))


def _standardize(text: str) -> str:
    return _STRIP.sub("", text).lower().replace("'", '"')  # BFCL's own string standardization


def value_matches(value: Any, acceptable: Any) -> bool:
    """One produced value against one acceptable gold value (not a list of alternatives)."""
    if isinstance(acceptable, bool) or isinstance(value, bool):
        if isinstance(acceptable, str) and isinstance(value, bool):  # Java/JS gold writes literals as strings
            return _standardize(acceptable) == str(value).lower()
        return type(value) is type(acceptable) and value == acceptable
    if isinstance(acceptable, (int, float)):  # a number written as a string is a type error, as in BFCL
        return isinstance(value, (int, float)) and float(value) == float(acceptable)
    if isinstance(acceptable, str):
        if isinstance(value, (int, float)):
            value = json.dumps(value)
        return isinstance(value, str) and _standardize(value) == _standardize(acceptable)
    if isinstance(acceptable, list):
        return (
            isinstance(value, list)
            and len(value) == len(acceptable)
            and all(value_matches(v, a) for v, a in zip(value, acceptable, strict=True))
        )
    if isinstance(acceptable, Mapping):
        return isinstance(value, Mapping) and arguments_match(value, acceptable)
    return value == acceptable


def _acceptable(gold_values: Any) -> list[Any]:
    """BFCL writes each argument's alternatives as a list; nested dict gold sometimes gives a bare value."""
    return gold_values if isinstance(gold_values, list) else [gold_values]


def arguments_match(arguments: Mapping[str, Any], gold: Mapping[str, Any]) -> bool:
    """Every gold argument present with an acceptable value (or absent if optional); no argument beyond the gold."""
    if any(key not in gold for key in arguments):
        return False
    for key, alternatives in gold.items():
        alternatives = _acceptable(alternatives)
        if not alternatives:  # live_* gold writes [] for "nothing here": absent or an empty list
            if arguments.get(key, []) != []:
                return False
            continue
        if key not in arguments:
            if "" not in alternatives:
                return False
            continue
        value = arguments[key]
        if value == "" and "" in alternatives:
            continue
        if not any(value_matches(value, a) for a in alternatives if a != ""):
            return False
    return True


def call_matches(call: Mapping[str, Any], gold_entry: Mapping[str, Mapping[str, Any]]) -> bool:
    """One produced call against one BFCL gold entry `{function_name: {arg: [acceptable, …]}}`."""
    ((name, gold_args),) = gold_entry.items()
    return call.get("name") == name and arguments_match(call.get("arguments", {}), gold_args)


def calls_match(calls: Sequence[Mapping[str, Any]], ground_truth: Sequence[Mapping[str, Any]]) -> bool:
    """Same number of calls, and some one-to-one pairing in which every produced call matches its gold entry."""
    if len(calls) != len(ground_truth) or not calls:
        return False
    if len(calls) <= _MAX_PERMUTED_CALLS:
        return any(
            all(call_matches(c, g) for c, g in zip(perm, ground_truth, strict=True))
            for perm in itertools.permutations(calls)
        )
    remaining = list(calls)
    for gold in ground_truth:
        hit = next((c for c in remaining if call_matches(c, gold)), None)
        if hit is None:
            return False
        remaining.remove(hit)
    return True


def score(text: str, gold: Mapping[str, Any]) -> bool:
    """True when the reply's tool calls match a BFCL single-turn record's `gold["ground_truth"]`."""
    return calls_match(parse_tool_calls(text), gold["ground_truth"])


_CALL_SPAN = re.compile(r"<tool_call>.*?(?:</tool_call>|\Z)", re.DOTALL)


def tool_call_tokens(token_ids: Sequence[int], decode: Any) -> int:
    """How many of an answer's tokens lie (at least partly) inside `<tool_call>…</tool_call>` blocks.

    ToolSpec's schema drafting only helps there (Amdahl: a tool-light answer cannot gain much), so reports show
    this share next to the speed-up. `decode(ids) -> str` must keep the tags (they are plain text for SmolLM2).
    """
    text = decode(list(token_ids))
    spans = [m.span() for m in _CALL_SPAN.finditer(text)]
    if not spans:
        return 0
    inside, start = 0, 0
    for i in range(len(token_ids)):
        end = len(decode(list(token_ids[: i + 1])))
        if any(lo < end and start < hi for lo, hi in spans):
            inside += 1
        start = end
    return inside
