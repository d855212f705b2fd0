"""`ParticlePool`: rows are recycled, grown, widened and compacted without touching any live group's state."""

from __future__ import annotations

import pytest
import torch

from specplug.core.smc import SMCConfig, SMCSampler
from specplug.core.smc.pool import MIN_ROWS, ParticlePool

VOCAB, EOS = 30, 29
CONFIG = SMCConfig(num_particles=2, gamma=2, resample_threshold=1.0)
KEY = (2, 1.0, (EOS,))


def _advance(pool: ParticlePool, groups: list[str], gen: torch.Generator) -> None:
    """One first-token draw for `groups` through the pool."""
    pool.first_tokens(pool.rows(groups), torch.randn(len(groups), VOCAB, generator=gen))


def test_rows_recycle_grow_widen_and_compact_keep_live_state() -> None:
    gen = torch.Generator().manual_seed(0)
    pool = ParticlePool(CONFIG, KEY)
    names = [f"g{i}" for i in range(9)]
    for i, name in enumerate(names):
        pool.add(name, 10 + i, seed=i)
    _advance(pool, names, gen)
    assert pool.state is not None and pool.state.num_requests >= 9
    snapshot = {g: pool.take(pool.rows([g])).tokens[..., :12].clone() for g in names}

    pool.add("wide", 500, seed=99)  # a longer budget widens every row's token buffer
    assert pool.state.tokens.shape[-1] >= 500 + CONFIG.block_size
    for g in names:
        assert torch.equal(pool.take(pool.rows([g])).tokens[..., :12], snapshot[g])

    for g in names[:8]:
        pool.remove(g)
    assert pool.state.num_requests <= 2 * max(len(pool), MIN_ROWS)  # compacted: memory follows the live load
    assert torch.equal(pool.take(pool.rows(["g8"])).tokens[..., :12], snapshot["g8"])
    assert int(pool.take(pool.rows(["g8"])).max_new_tokens[0]) == 18

    row = pool.add("again", 7, seed=5)  # a recycled row starts clean
    state = pool.take(torch.tensor([row]))
    assert int(state.lengths.sum()) == 0 and not bool(state.finished.any()) and int(state.cycles[0]) == 0
    pool.remove("g8")
    pool.remove("wide")
    pool.remove("again")
    assert pool.state is None and len(pool) == 0


def test_a_pooled_row_draws_what_a_lone_state_draws() -> None:
    """Draws are keyed by (seed, cycle, particle): a group's row index and neighbours change nothing."""
    gen = torch.Generator().manual_seed(1)
    pool = ParticlePool(CONFIG, KEY)
    pool.add("x", 12, seed=1)
    pool.add("y", 12, seed=42)
    logits = torch.randn(2, VOCAB, generator=gen)
    pooled, _ = pool.first_tokens(pool.rows(["y", "x"]), logits)
    alone = SMCSampler(CONFIG, (EOS,))
    state = alone.start(1, 12, [42])
    assert torch.equal(alone.first_tokens(state, logits[:1]), pooled[:1])


def test_adding_a_group_twice_is_refused() -> None:
    pool = ParticlePool(CONFIG, KEY)
    pool.add("x", 4, seed=0)
    with pytest.raises(ValueError, match="already has a row"):
        pool.add("x", 4, seed=0)
