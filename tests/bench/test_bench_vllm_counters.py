"""vLLM's spec-decode counters -> the accepted-length histogram (no engine needed: pure arithmetic)."""

from __future__ import annotations

from specplug.bench.vllm_engine import accepted_lengths
from specplug.bench.vllm_worker import _combine


def test_accepted_lengths_from_per_position_counters() -> None:
    # 10 drafts of k=3: 6 accepted >= 1, 3 accepted >= 2, 1 accepted all 3.
    lengths = accepted_lengths(10, [6, 3, 1])
    assert sorted(lengths) == [0] * 4 + [1] * 3 + [2] * 2 + [3]
    assert sum(lengths) == 6 + 3 + 1  # total accepted tokens, as vLLM's own counter says
    assert accepted_lengths(0, []) == [] and accepted_lengths(5, []) == [0] * 5


def test_combine_pads_and_subtracts() -> None:
    assert _combine([5, 3, 1], [2, 1], -1) == [3, 2, 1]
    assert _combine([], [1, 2], 1) == [1, 2]
