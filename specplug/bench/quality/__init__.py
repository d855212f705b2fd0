"""Task accuracy for `specplug bench`: one scorer per dataset with gold answers, applied the same way to every arm.

Speed without quality is not a result (DESIGN.md, measurement rules). Exact match against `ar` says whether an
arm changed the output; task accuracy says what the output is worth. BFCL single-turn, HumanEval and records
with per-turn gold calls (BFCL `multi_turn_turns`, ToolTalk) are scored; records without a scorable gold (MT-Bench,
BFCL irrelevance, first-turn-only `bfcl:multi_turn`) are not, and a run with none reports accuracy None.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from specplug.assets.datasets import PromptRecord

METRICS = {
    "bfcl": "BFCL call match (AST-style)",
    "humaneval": "HumanEval pass@1 (sandboxed, 10 s timeout)",
    "toolcalls": "tool-call match (the turn's gold calls, any order)",
}


def task_of(record: PromptRecord) -> str | None:
    """Which scorer applies to a record, from what its gold holds (so JSONL files in the same shape work too)."""
    gold = record.gold
    if not isinstance(gold, dict):
        return None
    truth = gold.get("ground_truth")
    if isinstance(truth, list) and truth and all(isinstance(e, dict) and len(e) == 1 for e in truth):
        return "bfcl"  # single-turn BFCL: [{function: {arg: [acceptable, …]}}, …]
    if {"test", "entry_point"} <= set(gold) and "prompt" in record.extra:
        return "humaneval"
    calls = gold.get("calls")
    if isinstance(calls, list) and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        return "toolcalls"  # one turn's exact calls: BFCL multi_turn_turns, ToolTalk
    return None


def score_one(record: PromptRecord, text: str) -> bool:
    task = task_of(record)
    if task == "bfcl":
        from specplug.bench.quality import bfcl

        return bfcl.score(text, record.gold)
    if task == "humaneval":
        from specplug.bench.quality import humaneval

        return humaneval.score(text, record.gold, record.extra["prompt"])
    if task == "toolcalls":
        from specplug.bench.quality import toolcalls

        return toolcalls.score(text, record.gold)
    raise ValueError(f"record {record.id} has no scorable gold")


@dataclass
class Scorer:
    """Scores decoded outputs of a workload's records; identical (record, text) pairs are scored once per run."""

    records: Sequence[PromptRecord]
    decode: Callable[[list[int]], str]

    def __post_init__(self) -> None:
        self._cache: dict[tuple[int, str], bool] = {}
        self._outcomes: dict[tuple[int, str], tuple[str, ...]] = {}
        tasks = {task_of(r) for r in self.records} - {None}
        self.metric = "; ".join(METRICS[t] for t in sorted(tasks)) or None

    def judge(self, outputs: dict[int, list[int]]) -> dict[int, bool]:
        """Correct or not, per workload index, for the outputs whose record has a scorable gold."""
        results: dict[int, bool] = {}
        for index, ids in sorted(outputs.items()):
            record = self.records[index]
            if task_of(record) is None:
                continue
            text = self.decode(ids)
            key = (index, text)
            if key not in self._cache:
                self._cache[key] = score_one(record, text)
            results[index] = self._cache[key]
        return results

    def score(self, outputs: dict[int, list[int]]) -> dict[str, object]:
        """accuracy (fraction of scorable prompts correct), and the indices of the failed ones; None if none apply."""
        return summary(self.judge(outputs))

    def outcomes(self, outputs: dict[int, list[int]]) -> dict[int, tuple[str, ...]]:
        """What each output answered, per workload index — the input of `agreement_with`. HumanEval: the per-test
        outcomes of the completion. Tool calls (BFCL, ToolTalk): the task's answer, i.e. the calls the reply makes
        (parsed, arguments normalized, order kept), or its stripped text when it makes none."""
        from specplug.bench.quality import bfcl, humaneval

        results: dict[int, tuple[str, ...]] = {}
        for index, ids in sorted(outputs.items()):
            record = self.records[index]
            task = task_of(record)
            if task is None:
                continue
            text = self.decode(ids)
            key = (index, text)
            if key not in self._outcomes:
                if task == "humaneval":
                    self._outcomes[key] = humaneval.test_outcomes(text, record.gold, record.extra["prompt"])
                else:
                    calls = bfcl.parse_tool_calls(text)
                    answer = json.dumps(calls, sort_keys=True) if calls else "text:" + text.strip()
                    self._outcomes[key] = (answer,)
            results[index] = self._outcomes[key]
        return results


def summary(verdicts: dict[int, bool]) -> dict[str, object]:
    """The accuracy keys of a results.json record from per-prompt verdicts."""
    if not verdicts:
        return {"accuracy": None}
    return {
        "accuracy": sum(verdicts.values()) / len(verdicts),
        "accuracy_scored": len(verdicts),
        "accuracy_failed": [i for i, ok in verdicts.items() if not ok],
    }


def agreement_with(
    reference_outcomes: dict[int, tuple[str, ...]], arm_outcomes: dict[int, tuple[str, ...]]
) -> dict[str, object]:
    """How alike an arm's code behaves to the reference arm's (ar), test by test, over the prompts both scored.

    A signal where pass@1 has none: two failing replies that fail the same tests the same way agree.
    functional_agreement: fraction of prompts whose outcomes all equal the reference's; test_agreement: fraction
    of all their tests with equal outcomes; agreement_differs: the prompts that do not agree. None if no overlap.
    """
    common = sorted(reference_outcomes.keys() & arm_outcomes.keys())
    if not common:
        return {"functional_agreement": None}
    pairs = [(reference_outcomes[i], arm_outcomes[i]) for i in common]
    for index, (ref, arm) in zip(common, pairs, strict=True):
        if len(ref) != len(arm):
            raise ValueError(f"prompt {index}: {len(ref)} reference test outcomes but {len(arm)} for the arm")
    tests = sum(len(ref) for ref, _ in pairs)
    same_tests = sum(a == b for ref, arm in pairs for a, b in zip(ref, arm, strict=True))
    return {
        "functional_agreement": sum(ref == arm for ref, arm in pairs) / len(pairs),
        "test_agreement": same_tests / tests if tests else 1.0,
        "agreement_scored": len(pairs),
        "agreement_differs": [i for i, (ref, arm) in zip(common, pairs, strict=True) if ref != arm],
    }


def scorer_for(workload, decode):
    """Accuracy scorer for the workload's records, or None when none of them has a gold the bench scores."""
    if decode is None or not any(task_of(r) is not None for r in workload.records):
        return None
    return Scorer(workload.records, decode)


def decoder_for(workload) -> Callable[[list[int]], str] | None:
    """Output ids -> text with the target's tokenizer, special tokens dropped (the same decoding for every arm)."""
    if not workload.tokenizer_path or not Path(workload.tokenizer_path).is_dir():
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(workload.tokenizer_path)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
