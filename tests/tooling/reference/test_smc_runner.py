"""SMC-SD through the reference runner: one target forward per cycle, γ+1 tokens per live particle, and forks
that carry a lineage's tokens and KV exactly (tiny random Llama, seconds)."""

from __future__ import annotations

import pytest
import torch

from specplug.core.smc import SMCConfig, resample
from specplug.reference.smc_runner import SMCReferenceRunner


class CountingModel(torch.nn.Module):
    """Counts forward calls of a wrapped model (a separate counter per wrapper, even over shared weights)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.config, self.calls = model, model.config, 0

    def forward(self, **kwargs):
        self.calls += 1
        return self.model(**kwargs)


def _prompts():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 97, (n,), generator=g).tolist() for n in (5, 9, 7)]


def test_one_target_forward_per_block_of_gamma_plus_one(tiny_llama):
    config = SMCConfig(num_particles=3, gamma=4, draft_temperature=1.0, target_temperature=1.0)
    target, draft = CountingModel(tiny_llama), CountingModel(tiny_llama)
    out = SMCReferenceRunner(target, draft, config).generate(_prompts(), 21, seed=1)
    stats = out.stats
    assert target.calls == stats.target_forwards == 1 + stats.cycles  # prefill + one verify per cycle
    assert stats.cycles == 4  # 1 first token + 4 blocks of 5 = 21
    assert all(c == config.gamma + 1 for cycle in stats.committed for c in cycle)
    assert draft.calls == config.gamma * stats.cycles
    assert all(len(t) == 21 for t in out.tokens)
    # Draft = target at equal temperatures: weights uniform up to fp32 noise, so no resampling.
    assert float(out.final.log_weights.abs().max()) < 1e-3
    assert sum(stats.resampled) == 0


def test_forked_particles_continue_their_ancestors_exact_tokens_and_kv(tiny_llama, monkeypatch):
    """Force a random fork every cycle (multinomial resampling of uniform weights, ESS patched to 0).

    If a forked row's KV did not match its new lineage, the target's scores (one block forward over the row's
    cache) would disagree with the draft's (token-by-token over its own cache) and the weights would move off 0.
    """
    monkeypatch.setattr(resample, "effective_sample_size", lambda w: torch.zeros(w.shape[0], dtype=w.dtype))
    config = SMCConfig(
        num_particles=4, gamma=3, draft_temperature=1.0, target_temperature=1.0, resample_method="multinomial"
    )
    out = SMCReferenceRunner(tiny_llama, tiny_llama, config).generate(_prompts(), 17, seed=3)
    stats = out.stats
    assert stats.resampled == [3] * (stats.cycles - 1) + [0]  # every cycle but the last (finished groups stop)
    assert stats.refed_tokens > 0  # some rows really changed lineage
    assert float(out.final.log_weights.abs().max()) < 1e-3
    assert all(len(p) == 17 for particles in out.particles for p in particles)
    # Returned tokens are a genuine particle of the group.
    assert all(out.tokens[r] in out.particles[r] for r in range(3))


def test_mismatched_draft_triggers_resampling(tiny_llama):
    config = SMCConfig(num_particles=4, gamma=3, draft_temperature=0.4, target_temperature=1.0)
    out = SMCReferenceRunner(tiny_llama, tiny_llama, config).generate(_prompts(), 17, seed=0)
    assert out.stats.resample_rate > 0
    assert min(min(e) for e in out.stats.ess) < 0.5


@pytest.mark.parametrize("eos_row", [0])
def test_eos_finishes_a_group_early(tiny_llama, eos_row):
    config = SMCConfig(num_particles=2, gamma=2, draft_temperature=1.0, target_temperature=1.0)
    base = SMCReferenceRunner(tiny_llama, tiny_llama, config).generate(_prompts()[:1], 12, seed=5)
    eos = base.tokens[eos_row][4]  # a token the chosen particle emits: declare it EOS and rerun
    out = SMCReferenceRunner(tiny_llama, tiny_llama, config, eos_token_ids=[eos]).generate(_prompts()[:1], 12, seed=5)
    assert all(p[-1] == eos or len(p) == 12 for p in out.particles[0])
    assert min(len(p) for p in out.particles[0]) <= 5
