"""Tool-call match for per-turn gold (BFCL multi_turn_turns, ToolTalk): same calls in any order, nothing else."""

from __future__ import annotations

import json

import pytest

from specplug.assets.datasets import PromptRecord
from specplug.assets.prompts import format_tool_call
from specplug.bench.quality import METRICS, score_one, task_of
from specplug.bench.quality.toolcalls import calls_match, parse_calls, score

USER = [{"role": "user", "content": "?"}]
CD = {"name": "cd", "arguments": {"folder": "document"}}
MV = {"name": "mv", "arguments": {"source": "final_report.pdf", "destination": "temp"}}
TURN = {"calls": [CD, MV], "turn": 0}
BFCL_TURN = PromptRecord("multi_turn_base_0/turn0", "bfcl", "multi_turn_base", USER, [], TURN)
TOOLTALK = PromptRecord(
    "conv/1", "tooltalk", "easy", USER, [], {"calls": [{"name": "UserLogin", "arguments": {"username": "a"}}]}
)


def reply(*calls: dict) -> str:
    return "\n".join(format_tool_call(c["name"], c["arguments"]) for c in calls)


def test_the_same_calls_in_any_order_match() -> None:
    assert score(reply(CD, MV), TURN)
    assert score(reply(MV, CD), TURN), "order within a turn does not matter"
    swapped = {"name": "mv", "arguments": {"destination": "temp", "source": "final_report.pdf"}}
    assert score(reply(CD, swapped), TURN), "argument order does not matter"
    assert score("<tool_call>" + json.dumps([CD, MV]) + "</tool_call>", TURN), "a list of calls in one block"


def test_numbers_and_sequences_compare_as_json_values() -> None:
    assert calls_match(
        [{"name": "f", "arguments": {"n": 2.0, "xs": (1, 2)}}], [{"name": "f", "arguments": {"n": 2, "xs": [1, 2]}}]
    )
    assert not calls_match([{"name": "f", "arguments": {"n": 2.5}}], [{"name": "f", "arguments": {"n": 2}}])
    assert not calls_match([{"name": "f", "arguments": {"b": True}}], [{"name": "f", "arguments": {"b": 1}}])
    assert not calls_match([{"name": "f", "arguments": {"s": "Temp"}}], [{"name": "f", "arguments": {"s": "temp"}}])


@pytest.mark.parametrize(
    "text",
    [
        reply(CD),  # a call missing
        reply(CD, MV, CD),  # a call too many
        reply(CD, {"name": "mv", "arguments": {"source": "final_report.pdf", "destination": "archive"}}),
        reply(CD, {"name": "cp", "arguments": MV["arguments"]}),  # wrong name
        reply(CD, {"name": "mv", "arguments": {"source": "final_report.pdf"}}),  # an argument missing
        reply(CD, {"name": "mv", "arguments": {**MV["arguments"], "force": True}}),  # an argument too many
    ],
)
def test_any_difference_is_a_mismatch(text: str) -> None:
    assert not score(text, TURN)


def test_duplicates_count() -> None:
    assert not calls_match([CD, CD], [CD])
    assert calls_match([CD, CD], [CD, CD])


def test_unparseable_replies_are_wrong() -> None:
    assert not score("I would change into the document folder first.", TURN)
    assert not score('<tool_call>{"name": "cd", "arguments": {"folder": </tool_call>', TURN)
    assert not score(reply(CD, MV) + "\n<tool_call>not json</tool_call>", TURN), "an unreadable extra block"
    assert parse_calls("<tool_call>{oops}</tool_call>") == []


def test_a_turn_without_gold_calls_wants_no_call() -> None:
    empty = {"calls": [], "turn": 1}
    assert score("Which file do you mean?", empty)
    assert not score(reply(CD), empty)
    assert not score("<tool_call>{broken</tool_call>", empty)


def test_bfcl_turns_and_tooltalk_records_are_scored_by_toolcalls() -> None:
    assert task_of(BFCL_TURN) == "toolcalls" and task_of(TOOLTALK) == "toolcalls"
    assert "toolcalls" in METRICS
    assert score_one(BFCL_TURN, reply(MV, CD))
    assert not score_one(TOOLTALK, reply({"name": "UserLogin", "arguments": {"username": "b"}}))
    assert task_of(PromptRecord("x", "bfcl", "c", USER, [], {"calls": [{"arguments": {}}]})) is None, "needs names"
