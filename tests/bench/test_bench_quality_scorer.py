"""Which records get scored, by which scorer, and how one arm's outputs become its accuracy figure."""

from __future__ import annotations

from specplug.assets.datasets import PromptRecord
from specplug.bench.quality import Scorer, task_of

USER = [{"role": "user", "content": "?"}]
HUMANEVAL = PromptRecord(
    "HumanEval/x",
    "humaneval",
    "code",
    USER,
    gold={"entry_point": "inc", "test": "def check(f):\n    assert f(1) == 2\n", "canonical_solution": ""},
    extra={"prompt": "def inc(x):\n    '''x + 1'''\n"},
)
BFCL = PromptRecord("simple_python_1", "bfcl", "simple_python", USER, [], {"ground_truth": [{"f": {"a": [1]}}]})
MTBENCH = PromptRecord("81", "mtbench", "writing", USER, gold={"reference_turns": ["..."]})
MULTI_TURN = PromptRecord("multi_turn_base_0", "bfcl", "multi_turn_base", USER, [], {"turns": [["f(a=1)"]]})


def test_task_of() -> None:
    assert task_of(HUMANEVAL) == "humaneval" and task_of(BFCL) == "bfcl"
    assert task_of(MTBENCH) is None and task_of(MULTI_TURN) is None


def test_scorer_scores_only_what_has_gold_and_caches_repeats() -> None:
    texts = {1: "```python\ndef inc(x):\n    return x + 1\n```", 2: "```python\ndef inc(x):\n    return x\n```"}
    texts[3] = '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
    decoded: list[int] = []

    def decode(ids: list[int]) -> str:
        decoded.append(ids[0])
        return texts.get(ids[0], "")

    scorer = Scorer([HUMANEVAL, BFCL, MTBENCH], decode)
    assert scorer.metric == "BFCL call match (AST-style); HumanEval pass@1 (sandboxed, 10 s timeout)"
    assert scorer.score({0: [1], 1: [3], 2: [9]}) == {"accuracy": 1.0, "accuracy_scored": 2, "accuracy_failed": []}
    assert scorer.score({0: [2], 1: [3], 2: [9]}) == {"accuracy": 0.5, "accuracy_scored": 2, "accuracy_failed": [0]}
    assert scorer.score({0: [1], 1: [4]})["accuracy_failed"] == [1]
    assert 9 not in decoded  # MT-Bench has no scorable gold: not even decoded


def test_no_scorable_records_means_none() -> None:
    scorer = Scorer([MTBENCH, MULTI_TURN], lambda ids: "")
    assert scorer.metric is None and scorer.score({0: [1], 1: [2]}) == {"accuracy": None}
