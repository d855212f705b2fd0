"""One SMC cycle on hand-built tensors: EOS cut (T7), token budget, freezing, determinism per request seed."""

from __future__ import annotations

import math

import pytest
import torch

from specplug.core.errors import ConfigError
from specplug.core.smc import SMCConfig, SMCSampler, weights
from specplug.core.smc.rng import Stream, uniforms
from specplug.core.types import PAD_TOKEN

V, EOS, GAMMA = 5, 4, 3


def _setup(alpha: float = 1.5, budget: int = 20, seed: int = 0):
    config = SMCConfig(num_particles=2, gamma=GAMMA, resample_threshold=0.0, alpha=alpha, target_temperature=0.9)
    sampler = SMCSampler(config, eos_token_ids=[EOS])
    state = sampler.start(1, budget, seeds=[seed])
    g = torch.Generator().manual_seed(seed)
    prompt_logits = torch.randn((1, V), generator=g)
    prompt_logits[0, EOS] = -30.0  # the first token is not EOS
    sampler.first_tokens(state, prompt_logits)
    drafts = torch.tensor([[[1, EOS, 2], [1, 2, 3]]])
    log_q = torch.log(torch.tensor([[[0.5, 0.25, 0.2], [0.4, 0.3, 0.6]]], dtype=torch.float64))
    logits = torch.randn((1, 2, GAMMA + 1, V), generator=g)
    logits[..., GAMMA, EOS] = -30.0  # the bonus is not EOS either: only the draft's EOS ends a particle here
    return config, sampler, state, drafts, log_q, logits


def _delta(config, drafts, log_q, logits):
    log_p = torch.log_softmax(logits[0, :, :GAMMA].double() / config.target_temperature, -1)
    return config.alpha * log_p.gather(-1, drafts[0].unsqueeze(-1)).squeeze(-1) - log_q[0]


def _log_z_bonus(config, logits):
    scaled = logits[0, :, GAMMA].double() / config.target_temperature
    return torch.logsumexp(config.alpha * scaled, -1) - config.alpha * torch.logsumexp(scaled, -1)


def check_eos_cut_and_freeze() -> bool:
    config, sampler, state, drafts, log_q, logits = _setup()
    before = state.log_weights.clone()
    result = sampler.cycle(state, drafts, log_q, logits)
    delta, log_z = _delta(config, drafts, log_q, logits), _log_z_bonus(config, logits)
    want = torch.stack([delta[0, :2].sum(), delta[1].sum() + log_z[1]])
    ok = torch.allclose(result.increments[0], want, atol=1e-9)
    ok &= result.num_committed[0].tolist() == [2, GAMMA + 1]
    ok &= result.tokens[0, 0].tolist() == [1, EOS, PAD_TOKEN, PAD_TOKEN]
    ok &= state.finished[0].tolist() == [True, False]
    ok &= torch.allclose(state.log_weights - before, result.increments, atol=1e-12)
    frozen_weight, frozen_tokens = state.log_weights[0, 0].item(), state.particle_tokens(0, 0)
    again = sampler.cycle(state, drafts, log_q, logits)
    ok &= again.increments[0, 0].item() == 0.0 and int(again.num_committed[0, 0]) == 0
    ok &= state.log_weights[0, 0].item() == frozen_weight and state.particle_tokens(0, 0) == frozen_tokens
    ok &= not bool(again.live[0, 0])
    return bool(ok)


def test_eos_mid_block_excludes_later_columns_and_freezes_the_particle():
    assert check_eos_cut_and_freeze()


def test_eos_check_fails_when_eos_is_not_detected(monkeypatch):
    monkeypatch.setattr(weights, "first_eos_column", lambda tokens, eos: torch.full_like(tokens[:, 0], tokens.shape[1]))
    assert not check_eos_cut_and_freeze()


def test_token_budget_cuts_the_block_and_its_weight():
    config, sampler, state, drafts, log_q, logits = _setup(budget=3)  # 1 first token + 2 of this block
    result = sampler.cycle(state, drafts, log_q, logits)
    delta = _delta(config, drafts, log_q, logits)
    assert result.num_committed[0].tolist() == [2, 2]
    assert torch.allclose(result.increments[0], delta[:, :2].sum(-1), atol=1e-9)  # no bonus, no third draft
    assert state.lengths[0].tolist() == [3, 3] and bool(state.finished.all())


def test_bonus_is_appended_after_a_full_block():
    _, sampler, state, drafts, log_q, logits = _setup()
    result = sampler.cycle(state, drafts, log_q, logits)
    row = state.particle_tokens(0, 1)
    assert len(row) == 1 + GAMMA + 1 and row[1:4] == [1, 2, 3] and row[4] == int(result.tokens[0, 1, GAMMA])


def test_a_shorter_block_commits_its_drafts_and_a_bonus_from_its_last_position():
    """Near an engine's context limit a cycle may carry m < γ drafts: the first m drafts are weighed as in a full
    block and the bonus is sampled from position m (what the target scored after them)."""
    config, sampler, state, drafts, log_q, logits = _setup()
    m = 1
    short_logits = logits[:, :, : m + 1].clone()
    short_logits[..., m, EOS] = -30.0
    result = sampler.cycle(state, drafts[:, :, :m], log_q[:, :, :m], short_logits)
    log_p = torch.log_softmax(short_logits[0, :, :m].double() / config.target_temperature, -1)
    delta = config.alpha * log_p.gather(-1, drafts[0, :, :m].unsqueeze(-1)).squeeze(-1) - log_q[0, :, :m]
    scaled = short_logits[0, :, m].double() / config.target_temperature
    log_z = torch.logsumexp(config.alpha * scaled, -1) - config.alpha * torch.logsumexp(scaled, -1)
    assert result.num_committed[0].tolist() == [m + 1, m + 1]
    assert torch.allclose(result.increments[0], delta.sum(-1) + log_z, atol=1e-9)
    assert state.particle_tokens(0, 1)[1:] == [1, int(result.tokens[0, 1, m])]
    with pytest.raises(ValueError, match="m ≤ 3"):
        sampler.cycle(state, torch.zeros((1, 2, 4), dtype=torch.int64), torch.zeros((1, 2, 4)), logits[:, :, :1])


def test_decisions_depend_only_on_the_request_seed_and_cycle():
    """A request draws the same bonus tokens and fork plan alone or inside a batch (what TP ranks rely on)."""
    config = SMCConfig(num_particles=4, gamma=2, resample_threshold=1.0)
    g = torch.Generator().manual_seed(0)
    drafts = torch.randint(0, V - 1, (3, 4, 2), generator=g)
    log_q = -torch.rand((3, 4, 2), generator=g, dtype=torch.float64) * 3
    logits = torch.randn((3, 4, 3, V), generator=g)
    prompt = torch.randn((3, V), generator=g)

    def run(rows: list[int]):
        sampler = SMCSampler(config, [EOS])
        state = sampler.start(len(rows), 16, seeds=[100 + r for r in rows])
        sampler.first_tokens(state, prompt[rows])
        result = sampler.cycle(state, drafts[rows], log_q[rows], logits[rows])
        return result, state

    batch, batch_state = run([0, 1, 2])
    alone, alone_state = run([1])
    assert torch.equal(batch.tokens[1], alone.tokens[0])
    assert torch.equal(batch.plan.ancestors[1], alone.plan.ancestors[0])
    assert bool(batch.plan.resampled[1]) and bool(alone.plan.resampled[0])
    assert torch.equal(batch_state.tokens[1], alone_state.tokens[0])


def test_shape_mismatch_is_a_clear_error():
    _, sampler, state, drafts, log_q, logits = _setup()
    with pytest.raises(ValueError, match="expected drafts"):  # 2 drafts need 3 scored positions, not 4
        sampler.cycle(state, drafts[..., :2], log_q[..., :2], logits)


def test_output_rules():
    config = SMCConfig(num_particles=3, gamma=1, output_rule="argmax")
    sampler = SMCSampler(config)
    state = sampler.start(2, 4, seeds=[1, 2])
    state.log_weights[:] = torch.tensor([[0.0, 2.0, 2.0], [-1.0, -3.0, 0.5]], dtype=torch.float64)
    state.lengths[:] = torch.tensor([[1, 1, 3], [2, 2, 2]])
    assert sampler.finalize(state).chosen.tolist() == [2, 2]  # max weight, then the longer particle

    posterior = SMCSampler(SMCConfig(num_particles=3, gamma=1))
    picks = []
    for seed in range(4000):
        st = posterior.start(1, 4, seeds=[seed])
        st.log_weights[:] = torch.log(torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64))
        picks.append(int(posterior.finalize(st).chosen[0]))
    freq = torch.bincount(torch.tensor(picks), minlength=3).double() / len(picks)
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), atol=4 * math.sqrt(0.25 / 4000))


def test_uniforms_are_deterministic_uniform_and_stream_separated():
    seeds, cycles = torch.tensor([7, 8]), torch.tensor([3, 3])
    a = uniforms(seeds, cycles, Stream.BONUS, (50_000,))
    assert torch.equal(a, uniforms(seeds, cycles, Stream.BONUS, (50_000,)))
    assert float(a.min()) >= 0 and float(a.max()) < 1
    # Kolmogorov–Smirnov distance of each stream to U(0, 1): critical value at α = 0.001 is 1.95/√n.
    sorted_u = a.sort(-1).values
    ks = (sorted_u - torch.arange(1, 50_001, dtype=torch.float64) / 50_000).abs().max(-1).values
    assert bool((ks < 1.95 / math.sqrt(50_000)).all())
    other = uniforms(seeds, cycles, Stream.RESAMPLE, (50_000,))
    assert abs(float(torch.corrcoef(torch.stack([a[0], other[0]]))[0, 1])) < 0.02
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("num_particles", 0),
        ("num_particles", 2.5),
        ("num_particles", True),
        ("gamma", 0),
        ("draft_temperature", 0.0),
        ("target_temperature", -1.0),
        ("target_temperature", float("nan")),
        ("resample_threshold", 1.5),
        ("alpha", 0),
        ("resample_method", "stratified"),
        ("output_rule", "best"),
    ],
)
def test_config_refuses_bad_values(setting, value):
    with pytest.raises(ConfigError, match=setting):
        SMCConfig.from_mapping({setting: value})


def test_config_defaults_and_unknown_keys():
    cfg = SMCConfig.from_mapping({})
    assert (cfg.num_particles, cfg.gamma, cfg.draft_temperature, cfg.target_temperature) == (4, 4, 0.7, 1.0)
    assert (cfg.resample_threshold, cfg.alpha, cfg.resample_method, cfg.output_rule) == (
        0.5,
        1.0,
        "systematic",
        "posterior",
    )
    with pytest.raises(ConfigError, match="num_particle"):
        SMCConfig.from_mapping({"num_particle": 8})
