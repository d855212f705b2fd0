"""SMC-SD against exactly enumerated laws on toy models (research/algorithms.md §1.8, T1–T4, T6).

Each property is a `check_*` function used twice: on the implementation (must pass) and on a copy with one line
broken on purpose through monkeypatch (must fail), so every test demonstrably can fail.
Tolerances: with 20,000 independent runs over 3^7 = 2,187 sequences the Monte-Carlo floor of the TV distance is
≈ 0.063 with a spread of ≈ 0.003 (measured over seeds), so "at the floor" means within floor + 0.012 (≈ 4σ).
"""

from __future__ import annotations

import pytest
import torch

from specplug.core.smc import SMCConfig, resample, weights
from specplug.core.smc.rng import Stream, stream_keys

RUNS = 20_000
LENGTH = 7  # first token + two blocks of γ + 1 = 3
TOL = 0.012


def _config(n: int, threshold: float = 0.5, temperature: float = 1.0, **extra) -> SMCConfig:
    return SMCConfig(
        num_particles=n,
        gamma=2,
        draft_temperature=temperature,
        target_temperature=temperature,
        resample_threshold=threshold,
        **extra,
    )


def _tv_to_law(toy, target, draft, config, law, length=LENGTH, seed=1, eos=()):
    final, state = toy.run_smc(target, draft, config, RUNS, length, seed=seed, eos=eos)
    return toy.tv(toy.empirical_law(toy.pad_outputs(final.tokens, length), law.numel()), law), final, state


@pytest.fixture(scope="module")
def model(toy):
    target = toy.ToyLM.random(LENGTH, seed=0)
    law = toy.exact_law(target, LENGTH)
    return target, law, toy.floor_tv(law, RUNS)


# T1: q = p gives the exact target law for every N and threshold, with uniform weights and no resampling.
def check_exact_when_draft_is_target(toy, model, n: int, threshold: float, temperature: float) -> bool:
    target, _, floor = model
    law = toy.exact_law(target, LENGTH, temperature=temperature)
    dist, final, state = _tv_to_law(toy, target, target, _config(n, threshold, temperature), law)
    uniform = bool((final.log_weights.abs() < 1e-9).all()) and int(state.num_resamples.sum()) == 0
    return dist <= floor + TOL and uniform


@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_draft_equal_to_target_is_exact(toy, model, n, threshold):
    assert check_exact_when_draft_is_target(toy, model, n, threshold, temperature=1.0)


def test_exactness_check_fails_when_target_temperature_is_dropped(toy, model, monkeypatch):
    true = weights.target_log_probs
    monkeypatch.setattr(weights, "target_log_probs", lambda logits, tokens, temperature: true(logits, tokens, 1.0))
    assert check_exact_when_draft_is_target(toy, model, 4, 0.5, temperature=1.0)  # T = 1: the bug is invisible
    assert not check_exact_when_draft_is_target(toy, model, 4, 0.5, temperature=0.6)


# T2: N = 1 performs no correction: its law is that of "draft γ tokens from q, then a bonus from p".
def test_single_particle_follows_the_uncorrected_block_process(toy, model):
    target, law, floor = model
    draft = target.perturbed(1.0)
    process = toy.block_process_law(target, draft, LENGTH, gamma=2)
    dist, _, _ = _tv_to_law(toy, target, draft, _config(1), process)
    assert dist <= floor + TOL
    assert toy.tv(process, law) > 0.3  # the process is far from the target, so the check above is not vacuous


# T3: TV to the target decreases with N towards the floor when q ≠ p; resampling is not worse than SIS.
def check_tv_decreases_with_particles(toy, model) -> bool:
    target, law, floor = model
    draft = target.perturbed(1.0)
    tvs = {n: _tv_to_law(toy, target, draft, _config(n), law)[0] for n in (1, 4, 16)}
    sis = _tv_to_law(toy, target, draft, _config(16, threshold=0.0), law)[0]
    return tvs[1] > tvs[4] > tvs[16] and tvs[16] < 0.5 * tvs[1] and tvs[16] <= sis + 0.01 and tvs[16] > floor


def test_tv_decreases_with_particles(toy, model):
    assert check_tv_decreases_with_particles(toy, model)


def test_tv_check_fails_when_weights_are_ignored(toy, model, monkeypatch):
    monkeypatch.setattr(
        resample, "normalized_weights", lambda log_w: torch.full_like(log_w.double(), 1 / log_w.shape[-1])
    )
    assert not check_tv_decreases_with_particles(toy, model)


# T4: E[Ẑ] = 1 at α = 1 (the target is normalized), for any N and threshold.
def check_evidence_is_unbiased(toy, model, n: int, threshold: float, length: int = LENGTH) -> bool:
    target, _, _ = model
    final, state = toy.run_smc(target, target.perturbed(1.0), _config(n, threshold), RUNS, length, seed=2)
    z = final.log_z.exp()
    mean, se = float(z.mean()), float(z.std() / RUNS**0.5)
    return abs(mean - 1) <= 4 * se and (threshold == 0 or n == 1 or int(state.num_resamples.sum()) > 0)


@pytest.mark.parametrize(("n", "threshold"), [(1, 0.5), (4, 0.0), (4, 0.5), (16, 1.0)])
def test_evidence_estimate_is_unbiased(toy, model, n, threshold):
    assert check_evidence_is_unbiased(toy, model, n, threshold)


def test_evidence_is_unbiased_when_the_budget_cuts_a_block(toy, model):
    assert check_evidence_is_unbiased(toy, model, 4, 0.5, length=LENGTH - 1)


def test_evidence_check_fails_without_the_log_n_term(toy, model, monkeypatch):
    monkeypatch.setattr(resample, "resample_log_normalizer", lambda log_w: torch.logsumexp(log_w.double(), dim=-1))
    assert not check_evidence_is_unbiased(toy, model, 4, 0.5)


# T6: α ≠ 1 targets the enumerated power distribution ∝ Π p_T^α (bonus weight log Z_b included).
def check_power_target(toy) -> bool:
    length = 5
    target = toy.ToyLM.random(length, seed=3)
    law = toy.exact_law(target, length, alpha=2.0)
    floor = toy.floor_tv(law, RUNS)
    config = _config(32, alpha=2.0)
    dist, _, _ = _tv_to_law(toy, target, target, config, law, length=length)
    return dist <= floor + TOL


def test_power_target_is_matched(toy):
    assert check_power_target(toy)


def test_power_check_fails_without_the_bonus_normalizer(toy, monkeypatch):
    true = weights.sample_power

    def no_log_z(logits, alpha, temperature, keys):
        tokens, log_z = true(logits, alpha, temperature, keys)
        return tokens, torch.zeros_like(log_z)

    monkeypatch.setattr(weights, "sample_power", no_log_z)
    assert not check_power_target(toy)


def test_bonus_normalizer_formula():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.1]], dtype=torch.float64)
    alpha, temperature = 2.5, 0.8
    _, log_z = weights.sample_power(logits, alpha, temperature, torch.tensor([5]))
    p = torch.softmax(logits / temperature, -1)
    assert torch.allclose(log_z, torch.log((p**alpha).sum(-1)), atol=1e-12)


def test_power_sampling_frequencies():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.1]], dtype=torch.float64)
    draws = 200_000
    keys = stream_keys(torch.tensor(0), torch.tensor(0), Stream.BONUS, torch.arange(draws))
    tokens, _ = weights.sample_power(logits.expand(draws, -1), 1.7, 0.9, keys)
    freq = torch.bincount(tokens, minlength=4).double() / draws
    expected = torch.softmax(1.7 * logits[0] / 0.9, -1)
    assert torch.allclose(freq, expected, atol=4 * (0.25 / draws) ** 0.5)


# T7 (statistical half; the exact half is in test_smc_cycle.py): with EOS absorbing, the law of the truncated
# sequences is matched when q = p, and Ẑ stays unbiased when q ≠ p.
def test_eos_truncated_law_and_evidence(toy, model):
    target, _, _ = model
    eos = (2,)
    law = toy.exact_law(target, LENGTH, eos=eos)
    floor = toy.floor_tv(law, RUNS)
    dist, _, state = _tv_to_law(toy, target, target, _config(4), law, eos=eos)
    assert dist <= floor + TOL
    assert bool((state.lengths < LENGTH).any())  # EOS really ended some particles early
    final, _ = toy.run_smc(target, target.perturbed(1.0), _config(4), RUNS, LENGTH, seed=4, eos=eos)
    z = final.log_z.exp()
    assert abs(float(z.mean()) - 1) <= 4 * float(z.std()) / RUNS**0.5


def test_gumbel_draws_ignore_perturbations_below_the_top_two_gap():
    """The point of keyed Gumbel-max: logits that differ by ~1e-5 (another tensor-parallel size) give the same
    draws, even where most of the mass sits on a long tail of improbable tokens (inverse CDF flips there)."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(512, 4096, generator=gen, dtype=torch.float64) * 3
    noisy = logits + torch.randn(logits.shape, generator=gen, dtype=torch.float64) * 1e-5
    keys = stream_keys(torch.tensor(1), torch.tensor(2), Stream.DRAFT, torch.arange(512))
    a, _ = weights.sample_power(logits, 1.0, 1.0, keys)
    b, _ = weights.sample_power(noisy, 1.0, 1.0, keys)
    assert int((a != b).sum()) <= 1
    u = torch.rand(512, generator=gen, dtype=torch.float64)  # inverse CDF with the same perturbation, for contrast
    inv_a = resample.inverse_cdf(torch.softmax(logits, -1), u)
    inv_b = resample.inverse_cdf(torch.softmax(noisy, -1), u)
    assert int((inv_a != inv_b).sum()) > int((a != b).sum())
