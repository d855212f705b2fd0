"""Systematic and multinomial resampling, ESS, and the in-place fork plan (algorithms.md §1.8 T5, T8)."""

from __future__ import annotations

import torch

from specplug.core.smc import resample

N = 8


def _weights(rows: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2.0 * torch.randn((rows, N), generator=g, dtype=torch.float64), -1)


def check_systematic_offspring(counts_fn) -> bool:
    """Counts are ⌊N·w̄⌋ or ⌈N·w̄⌉, sum to N, and average N·w̄ over repetitions (within 4 standard errors)."""
    g = torch.Generator().manual_seed(1)
    w = _weights(4000)
    counts = counts_fn(w, torch.rand(4000, generator=g, dtype=torch.float64))
    nw = N * w
    bounded = bool(((counts == nw.floor()) | (counts == nw.ceil())).all()) and bool((counts.sum(-1) == N).all())
    reps = 20_000
    one = w[:1].expand(reps, N)
    repeated = counts_fn(one, torch.rand(reps, generator=g, dtype=torch.float64)).double()
    se = repeated.std(0) / reps**0.5 + 1e-12
    unbiased = bool(((repeated.mean(0) - nw[0]).abs() <= 4 * se + 1e-9).all())
    return bounded and unbiased


def test_systematic_offspring_counts():
    assert check_systematic_offspring(resample.systematic_counts)


def test_systematic_check_fails_when_floor_replaces_ceil():
    def broken(weights, u):
        below = torch.floor(N * torch.cumsum(weights, -1) - u.unsqueeze(-1)).clamp(0, N).long()
        return torch.diff(below, dim=-1, prepend=torch.zeros_like(below[:, :1]))

    assert not check_systematic_offspring(broken)


def test_systematic_check_fails_for_multinomial_counts():
    """Multinomial draws are unbiased but not bounded by floor/ceil: the bound is what makes systematic low-variance."""

    def multinomial(weights, u):
        g = torch.Generator().manual_seed(int(u[0] * 1e6))
        return resample.multinomial_counts(weights, torch.rand(weights.shape, generator=g, dtype=torch.float64))

    assert not check_systematic_offspring(multinomial)


def test_multinomial_counts_are_unbiased():
    w = _weights(1)
    reps = 20_000
    u = torch.rand((reps, N), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    counts = resample.multinomial_counts(w.expand(reps, N), u).double()
    assert bool((counts.sum(-1) == N).all())
    se = counts.std(0) / reps**0.5
    assert bool(((counts.mean(0) - N * w[0]).abs() <= 4 * se).all())


def test_ess_bounds():
    uniform = torch.full((1, N), 1 / N, dtype=torch.float64)
    degenerate = torch.nn.functional.one_hot(torch.tensor([3]), N).double()
    assert float(resample.effective_sample_size(uniform)) == N
    assert float(resample.effective_sample_size(degenerate)) == 1.0


def test_fork_plan_keeps_survivors_in_place_and_fills_dead_slots():
    counts = torch.tensor([[2, 0, 1, 1], [0, 0, 4, 0], [1, 1, 1, 1]])
    plan = resample.fork_plan(counts, torch.tensor([True, True, False]))
    assert plan.ancestors.tolist() == [[0, 0, 2, 3], [2, 2, 2, 2], [0, 1, 2, 3]]
    # Flat slots: dst are exactly the dead slots, every src survives (so an in-place copy never reads a victim).
    assert plan.dst.tolist() == [1, 4, 5, 7]
    assert plan.src.tolist() == [0, 6, 6, 6]
    survivors = set(torch.nonzero(counts.flatten() > 0).flatten().tolist())
    assert set(plan.src.tolist()) <= survivors
    # Offspring implied by the plan equal the counts.
    implied = torch.zeros_like(counts).scatter_add_(1, plan.ancestors, torch.ones_like(counts))
    assert torch.equal(implied, counts)


def test_fork_plan_from_random_counts_matches_counts():
    w = _weights(500, seed=5)
    counts = resample.systematic_counts(w, torch.rand(500, generator=torch.Generator().manual_seed(3)).double())
    plan = resample.fork_plan(counts, torch.ones(500, dtype=torch.bool))
    implied = torch.zeros_like(counts).scatter_add_(1, plan.ancestors, torch.ones_like(counts))
    assert torch.equal(implied, counts)
    assert plan.num_copies == int((counts == 0).sum())
    assert bool((plan.dst // N == plan.src // N).all())  # copies never cross requests
