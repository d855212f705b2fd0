"""Tool-call match for records whose gold is the exact calls of one assistant turn: BFCL multi-turn turns
(`bfcl:multi_turn_turns`) and ToolTalk turns, both `gold = {"calls": [{"name": ..., "arguments": {...}}, ...]}`.

Why a second rule beside bfcl.py: that one reads BFCL's single-turn gold (alternative values per argument);
here the gold is one concrete call list, so a reply is right when it makes the same calls — the same multiset of
(name, arguments), in any order. Arguments compare as JSON values: key order, tuple vs list and 2 vs 2.0 do not
matter, everything else does (strings are compared exactly). A turn whose gold has no calls (a BFCL miss_param
turn, where the model should ask for the missing value) is right when the reply makes none. A `<tool_call>`
block that yields no call is unreadable and makes the reply wrong.
Parsing is bfcl.py's (`parse_tool_calls`): tagged blocks, JSON fences or bare JSON.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping, Sequence
from typing import Any

from specplug.bench.quality.bfcl import parse_tool_calls

_TAG = "<tool_call>"


def parse_calls(text: str) -> list[dict[str, Any]]:
    """The calls in a model's reply, in order, as {"name": str, "arguments": dict} (see bfcl.parse_tool_calls)."""
    return parse_tool_calls(text)


def _normalized(value: Any) -> Any:
    """A JSON value in one canonical form: integral floats as ints, tuples as lists (dict keys sorted on dump)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _normalized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    return value


def call_key(call: Mapping[str, Any]) -> str:
    """(name, normalized arguments) of one call as one comparable string."""
    arguments = call.get("arguments") or {}
    return json.dumps([call.get("name"), _normalized(arguments)], sort_keys=True, ensure_ascii=False, default=str)


def calls_match(calls: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]]) -> bool:
    """Same multiset of (name, normalized arguments): same calls, any order, duplicates counted."""
    return collections.Counter(map(call_key, calls)) == collections.Counter(map(call_key, gold))


def score(text: str, gold: Mapping[str, Any]) -> bool:
    """True when the reply makes exactly the gold calls of the turn, and every `<tool_call>` block is readable."""
    calls = parse_calls(text)
    if text.count(_TAG) > len(calls):  # a block the model meant as a call but wrote unreadably
        return False
    return calls_match(calls, gold["calls"])
