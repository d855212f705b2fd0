"""bfcl:multi_turn_turns on the pinned bfcl-eval wheel: 3,336 turn records with BFCL-executed gold history.

Slow: uses the real cache (pulls bfcl-eval from PyPI on the first run); run with `-m slow`.
"""

from __future__ import annotations

import collections
import itertools
import json

import pytest

from specplug.assets import asset_path, load_dataset, render_text
from specplug.assets.datasets import BFCL_ADDED_FUNCTIONS_PROMPT, PromptRecord
from specplug.assets.prompts import format_tool_call
from specplug.bench.quality import score_one, task_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def records() -> list[PromptRecord]:
    return load_dataset("bfcl", split="multi_turn_turns")


def test_one_record_per_turn_of_the_800_conversations(records: list[PromptRecord]) -> None:
    assert len(records) == 3336 and len({r.id for r in records}) == 3336
    assert collections.Counter(r.category for r in records) == {
        "multi_turn_base": 734,
        "multi_turn_miss_func": 934,
        "multi_turn_miss_param": 934,
        "multi_turn_long_context": 734,
    }
    assert len({r.extra["conversation_id"] for r in records}) == 800
    assert sum(len(r.gold["calls"]) for r in records) == 4625
    assert all(r.dataset == "bfcl" and r.messages[-1]["role"] == "user" and r.tools for r in records)
    for prev, cur in itertools.pairwise(records):  # consecutive records are consecutive turns
        same = cur.extra["conversation_id"] == prev.extra["conversation_id"]
        assert cur.extra["turn"] == (prev.extra["turn"] + 1 if same else 0), cur.id
    assert load_dataset("bfcl", split="multi_turn") != [], "the first-turn split still loads"


def test_turn_two_carries_the_earlier_gold_calls_and_bfcl_results(records: list[PromptRecord]) -> None:
    turn2 = next(r for r in records if r.id == "multi_turn_base_0/turn2")
    calls = [
        (m["tool_calls"][0]["function"]["name"], json.loads(m["tool_calls"][0]["function"]["arguments"]))
        for m in turn2.messages
        if m["role"] == "assistant"
    ]
    assert calls == [
        ("cd", {"folder": "document"}),
        ("mkdir", {"dir_name": "temp"}),
        ("mv", {"source": "final_report.pdf", "destination": "temp"}),
        ("cd", {"folder": "temp"}),
        ("grep", {"file_name": "final_report.pdf", "pattern": "budget analysis"}),
    ]
    results = [m["content"] for m in turn2.messages if m["role"] == "tool"]
    assert results[2] == json.dumps({"result": "'final_report.pdf' moved to 'temp/final_report.pdf'"})
    assert "including budget analysis" in results[4], "grep ran on the file the earlier turn moved"
    assert [m["role"] for m in turn2.messages].count("user") == 3
    assert turn2.gold == {"calls": [{"name": "sort", "arguments": {"file_name": "final_report.pdf"}}], "turn": 2}


def test_a_withheld_function_appears_at_its_turn(records: list[PromptRecord]) -> None:
    conv = [r for r in records if r.extra["conversation_id"] == "multi_turn_miss_func_0"]
    names = [[t["function"]["name"] for t in r.tools] for r in conv]
    assert ["sort" in n for n in names] == [False, False, False, True, True]
    assert conv[3].messages[-1] == {"role": "user", "content": BFCL_ADDED_FUNCTIONS_PROMPT}
    assert conv[3].gold["calls"] == [{"name": "sort", "arguments": {"file_name": "final_report.pdf"}}]


def test_loads_are_deterministic_and_no_gold_call_errs(records: list[PromptRecord]) -> None:
    assert load_dataset("bfcl", split="multi_turn_turns") == records
    assert not [r.id for r in records if any(res.startswith("Error during execution") for res in r.extra["results"])]


def test_the_gold_reply_scores_correct_on_every_turn(records: list[PromptRecord]) -> None:
    for record in records:
        assert task_of(record) == "toolcalls"
        gold = "\n".join(format_tool_call(c["name"], c["arguments"]) for c in record.gold["calls"])
        assert score_one(record, gold or "Which value do you mean?"), record.id


def test_smollm2_renders_the_history_as_tool_call_and_tool_response_turns(records: list[PromptRecord]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(asset_path("smollm2-135m")))
    text = render_text(next(r for r in records if r.id == "multi_turn_base_0/turn2"), tokenizer)
    assert '<tool_call>{"name": "mkdir", "arguments": {"dir_name": "temp"}}</tool_call>' in text
    assert text.count("<tool_response>") == 5 and text.endswith("<|im_start|>assistant\n")
