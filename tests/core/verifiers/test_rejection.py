"""Rejection sampling preserves the target law — checked exactly on an enumerable toy model.

Toy setup: vocabulary 3, sequences of length 3 (27 outcomes). Target and draft are lookup tables from the full
prefix to a next-token distribution, deliberately far apart. 60,000 sequences are generated in one batch with
k = 2 drafts per step; the empirical law must be within TV 0.015 of the exact target law (sampling noise at
this size is below 0.01; seed 7 gives 0.002). The same run with the residual step broken (resample from p instead of
norm(max(0, p − q))) lands at 0.038, outside that tolerance, so the test can fail.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from specplug.core.types import DraftBatch
from specplug.core.verifiers import rejection
from specplug.core.verifiers.rejection import RejectionSamplingVerifier

V, L, K, N = 3, 3, 2, 60_000
TOLERANCE = 0.015


def _tables(seed: int, sharpness: float) -> dict[tuple[int, ...], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    prefixes = [p for n in range(L + K + 1) for p in itertools.product(range(V), repeat=n)]
    return {p: torch.softmax(sharpness * torch.randn(V, generator=gen, dtype=torch.float64), 0) for p in prefixes}


TARGET, DRAFT = _tables(0, 2.0), _tables(1, 2.0)


def _law(tables: dict[tuple[int, ...], torch.Tensor]) -> dict[tuple[int, ...], float]:
    """Exact probability of every length-L sequence under a prefix table."""
    law = {}
    for seq in itertools.product(range(V), repeat=L):
        prob = 1.0
        for t in range(L):
            prob *= float(tables[seq[:t]][seq[t]])
        law[seq] = prob
    return law


def _exact_law() -> dict[tuple[int, ...], float]:
    return _law(TARGET)


def _generate(verifier: RejectionSamplingVerifier, seed: int) -> dict[tuple[int, ...], float]:
    gen = torch.Generator().manual_seed(seed)
    seqs: list[tuple[int, ...]] = [()] * N
    while min(len(s) for s in seqs) < L:
        q = torch.zeros((N, K, V), dtype=torch.float64)
        tokens = torch.zeros((N, K), dtype=torch.int64)
        drafted = [list(s) for s in seqs]
        for j in range(K):
            dists = torch.stack([DRAFT[tuple(d)] for d in drafted])
            q[:, j] = dists
            tok = torch.multinomial(dists, 1, generator=gen).squeeze(1)
            tokens[:, j] = tok
            for row, t in enumerate(tok.tolist()):
                drafted[row].append(t)
        logits = torch.stack(
            [
                torch.stack([TARGET[tuple(d[: len(s) + j])].log() for j in range(K + 1)])
                for d, s in zip(drafted, seqs, strict=True)
            ]
        )
        out = verifier.verify(
            DraftBatch(tokens, torch.full((N,), K), probs=q), logits * verifier.temperature, generator=gen
        )
        emitted = out.output_tokens.tolist()
        seqs = [(s + tuple(e[: n + 1]))[:L] for s, e, n in zip(seqs, emitted, out.num_accepted.tolist(), strict=True)]
    counts: dict[tuple[int, ...], float] = {}
    for s in seqs:
        counts[s] = counts.get(s, 0) + 1 / N
    return counts


def _tv(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def test_rejection_sampling_matches_the_exact_target_law() -> None:
    tv = _tv(_generate(RejectionSamplingVerifier(temperature=1.0), seed=7), _exact_law())
    assert tv < TOLERANCE, tv


def test_a_broken_residual_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rejection, "residual_distribution", lambda p, q: p)
    tv = _tv(_generate(RejectionSamplingVerifier(temperature=1.0), seed=7), _exact_law())
    assert tv > TOLERANCE, tv


def test_the_draft_law_itself_is_far_from_the_target() -> None:
    """Guards the test's power: if q were close to p, a broken verifier would pass unnoticed."""
    assert _tv(_law(DRAFT), _exact_law()) > 0.2


def test_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="temperature"):
        RejectionSamplingVerifier(temperature=0)
