"""Greedy chain verification on hand-built logits."""

from __future__ import annotations

import torch

from specplug.core.types import PAD_TOKEN, DraftBatch, TokenVerdict
from specplug.core.verifiers.greedy_chain import GreedyChainVerifier


def _logits_for(best: list[list[int]], vocab: int = 10) -> torch.Tensor:
    logits = torch.zeros(len(best), len(best[0]), vocab)
    for b, row in enumerate(best):
        for j, tok in enumerate(row):
            logits[b, j, tok] = 5.0
    return logits


def test_accepts_longest_matching_prefix_then_target_token() -> None:
    draft = DraftBatch(
        tokens=torch.tensor([[1, 2, 3], [1, 2, 3], [4, 4, PAD_TOKEN]]), num_tokens=torch.tensor([3, 3, 2])
    )
    logits = _logits_for([[1, 2, 3, 9], [1, 7, 3, 9], [4, 4, 8, 0]])
    out = GreedyChainVerifier().verify(draft, logits)
    assert out.num_accepted.tolist() == [3, 1, 2]
    assert out.output_tokens.tolist() == [[1, 2, 3, 9], [1, 7, -1, -1], [4, 4, 8, -1]]
    e, c, b = TokenVerdict.EXACT, TokenVerdict.CORRECTED, TokenVerdict.BONUS
    assert out.verdicts.tolist() == [[e, e, e, b], [e, c, -1, -1], [e, e, b, -1]]


def test_padding_is_never_accepted_even_if_it_matches() -> None:
    draft = DraftBatch(tokens=torch.tensor([[5, 5]]), num_tokens=torch.tensor([1]))
    out = GreedyChainVerifier().verify(draft, _logits_for([[5, 5, 5]]))
    assert out.num_accepted.tolist() == [1]
    assert out.output_tokens.tolist() == [[5, 5, -1]]


def test_empty_draft_is_plain_argmax() -> None:
    draft = DraftBatch(tokens=torch.zeros((2, 0), dtype=torch.int64), num_tokens=torch.zeros(2, dtype=torch.int64))
    out = GreedyChainVerifier().verify(draft, _logits_for([[3], [6]]))
    assert out.output_tokens.tolist() == [[3], [6]] and out.num_accepted.tolist() == [0, 0]
