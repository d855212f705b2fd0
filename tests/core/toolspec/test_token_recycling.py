"""Token recycling: each token keeps the target's last top-k successors (one vectorized update per pass)."""

from __future__ import annotations

import torch

from specplug.core.proposers.token_recycling import TokenRecycling


def test_logits_update_keeps_top_k_and_the_last_write_per_token() -> None:
    table = TokenRecycling(vocab_size=10, top_k=3)
    logits = torch.zeros(3, 10)
    logits[0, [7, 8, 9]] = torch.tensor([3.0, 2.0, 1.0])
    logits[1, [1, 2, 3]] = torch.tensor([1.0, 3.0, 2.0])
    logits[2, [4, 5, 6]] = torch.tensor([1.0, 2.0, 3.0])
    table.observe_logits(torch.tensor([5, 2, 5]), logits)  # token 5 scored twice: the later pass wins
    assert table.candidates(5) == [6, 5, 4]
    assert table.candidates(2) == [2, 3, 1]
    assert table.candidates(0) == [] and table.candidates(99) == []


def test_committed_greedy_tokens_set_the_top_candidate() -> None:
    table = TokenRecycling(vocab_size=10, top_k=2)
    table.observe_committed([1, 2, 1, 3])
    assert table.candidates(1) == [3]  # the later successor of 1
    assert table.candidates(2) == [1]


def test_rows_are_bounded_within_one_table() -> None:
    table = TokenRecycling(vocab_size=100, top_k=2, max_rows=2)
    table.observe_committed([1, 2, 3])  # rows 1 and 2
    table.observe_committed([1, 4])  # row 1 written again: row 2 is now the least recently written
    table.observe_committed([5, 6])  # a third row: row 2 gives way
    assert table.candidates(1) == [4] and table.candidates(5) == [6] and table.candidates(2) == []
    assert len(table) == 2 and table.evicted == 1
    other = TokenRecycling(vocab_size=100, top_k=2)
    assert other.candidates(1) == []  # tables never share rows
