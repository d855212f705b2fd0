"""Particle groups with equal settings, pooled in one `ParticleState` so one call serves them all.

An engine that schedules many user requests (groups) at once keeps each group's particles as a row of a shared
state, keyed by what the core sampler fixes per call (N, target temperature, EOS set). A step then runs one
`first_tokens` or one `cycle` over the rows that take part, as tensor operations, instead of one small call per
group. Rows are recycled when groups end, and the pool compacts itself when most rows are free, so its memory
follows the live load, not the peak.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from specplug.core.smc.config import SMCConfig
from specplug.core.smc.sampler import SMCSampler
from specplug.core.smc.state import ParticleState
from specplug.core.types import PAD_TOKEN

PoolKey = tuple[int, float, tuple[int, ...]]  # (particles, target temperature, EOS token ids)
MIN_ROWS = 4


class ParticlePool:
    """The rows of every live group that shares one `PoolKey`."""

    def __init__(self, config: SMCConfig, key: PoolKey, device: torch.device | str | None = None) -> None:
        particles, temperature, eos = key
        self.key = key
        self.config = dataclasses.replace(config, num_particles=particles, target_temperature=temperature)
        self.sampler = SMCSampler(self.config, eos)
        self.sampler.eos = self.sampler.eos.to(device)
        self.device = device
        self.state: ParticleState | None = None
        self.row_of: dict[str, int] = {}
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.row_of)

    # --- rows -------------------------------------------------------------------------------------------------

    def add(self, group: str, max_new_tokens: int, seed: int) -> int:
        """Give a new group a fresh row (its particles unstarted) and return the row."""
        if group in self.row_of:
            raise ValueError(f"group {group!r} already has a row")
        capacity = max_new_tokens + self.config.block_size
        if not self._free or self.state is None or self.state.tokens.shape[-1] < capacity:
            self._grow(len(self.row_of) + 1, capacity)
        row = self._free.pop()
        self.row_of[group] = row
        assert self.state is not None
        fresh = ParticleState.create(
            1,
            self.config.num_particles,
            max_new_tokens,
            torch.tensor([seed]),
            self.config.block_size,
            self.device,
        )
        self.state.put(self.rows([group]), fresh)
        return row

    def remove(self, group: str) -> None:
        """Free a group's row (an ended, failed or departed group); compact when most rows are free."""
        row = self.row_of.pop(group, None)
        if row is None or self.state is None:
            return
        self.state.finished[row] = True  # an inert row: no cycle weighs it
        self._free.append(row)
        rows = self.state.num_requests
        if not self.row_of:
            self.state, self._free = None, []
        elif rows > MIN_ROWS and len(self.row_of) * 4 <= rows:
            self._compact()

    def rows(self, groups: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.row_of[g] for g in groups], dtype=torch.int64, device=self.device)

    def _grow(self, rows: int, capacity: int) -> None:
        """Room for at least `rows` rows of at least `capacity` tokens; new rows start inert (finished)."""
        old = self.state
        have = old.num_requests if old is not None else 0
        width = max(capacity, old.tokens.shape[-1] if old is not None else 0)
        total = max(rows, 2 * have, MIN_ROWS) if have < rows or not self._free else have
        fresh = ParticleState.create(
            total,
            self.config.num_particles,
            width - self.config.block_size,
            torch.zeros(total, dtype=torch.int64),
            self.config.block_size,
            self.device,
        )
        fresh.finished.fill_(True)
        if old is not None:
            fresh.put(torch.arange(have, device=fresh.tokens.device), old)
        self.state = fresh
        self._free = sorted(set(self._free) | set(range(have, total)), reverse=True)

    def _compact(self) -> None:
        assert self.state is not None
        groups = sorted(self.row_of, key=self.row_of.__getitem__)
        keep = self.rows(groups)
        self.state = self.state.take(keep) if keep.numel() else None
        self.row_of = {g: i for i, g in enumerate(groups)}
        self._free = []

    # --- per-row facts ----------------------------------------------------------------------------------------

    def cycles(self) -> dict[str, int]:
        """Cycles each group has completed (the counter of its random streams), without copying any row."""
        if self.state is None:
            return {}
        groups = list(self.row_of)
        return dict(zip(groups, self.state.cycles[self.rows(groups)].tolist(), strict=True))

    def finished(self, rows: torch.Tensor) -> torch.Tensor:
        """[G, N] finished flags of the rows (no copy of their tokens)."""
        assert self.state is not None
        return self.state.finished[rows]

    def lineage_tail(self, group: str, slot: int) -> tuple[bool, int, int]:
        """(finished, length, last token) of one slot's lineage."""
        assert self.state is not None
        row = self.row_of[group]
        length = int(self.state.lengths[row, slot])
        token = int(self.state.tokens[row, slot, length - 1]) if length else PAD_TOKEN
        return bool(self.state.finished[row, slot]), length, token

    # --- batched sampler calls ------------------------------------------------------------------------------

    def take(self, rows: torch.Tensor) -> ParticleState:
        assert self.state is not None
        return self.state.take(rows)

    def put(self, rows: torch.Tensor, sub: ParticleState) -> None:
        assert self.state is not None
        self.state.put(rows, sub)

    def first_tokens(self, rows: torch.Tensor, prompt_logits: torch.Tensor) -> tuple[torch.Tensor, ParticleState]:
        """Every particle's first token for the groups at `rows` (prompt_logits [G, V]) → ([G, N], their state)."""
        sub = self.take(rows)
        tokens = self.sampler.first_tokens(sub, prompt_logits)
        self.put(rows, sub)
        return tokens, sub
