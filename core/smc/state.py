"""Particle state for a batch of requests × N particles, as dense tensors.

Generated tokens live in a preallocated [R, N, capacity] buffer so that committing a block and forking a lineage
are single scatter/gather operations. Weights are float64: a long generation sums hundreds of log-ratios, and
ESS decisions on float32 sums drift.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from specplug.core.types import PAD_TOKEN


@dataclass
class ParticleState:
    tokens: torch.Tensor  # [R, N, capacity] int64, PAD_TOKEN past `lengths`
    lengths: torch.Tensor  # [R, N] int64 generated tokens per particle
    log_weights: torch.Tensor  # [R, N] float64 — weight since the last resampling (used for the output choice)
    interval_log_weights: torch.Tensor  # [R, N] float64 — drives ESS and the log Ẑ factor at the next resampling
    finished: torch.Tensor  # [R, N] bool — EOS emitted or token budget reached
    log_z: torch.Tensor  # [R] float64 — running log Ẑ from completed resampling intervals
    seeds: torch.Tensor  # [R] int64 — per-request seed of every random draw (identical on every rank)
    cycles: torch.Tensor  # [R] int64 — cycles completed (the counter of the random streams)
    num_resamples: torch.Tensor  # [R] int64
    max_new_tokens: torch.Tensor  # [R] int64 — token budget per particle

    @classmethod
    def create(
        cls,
        num_requests: int,
        num_particles: int,
        max_new_tokens: int | torch.Tensor,
        seeds: torch.Tensor,
        block_size: int,
        device: torch.device | str | None = None,
    ) -> ParticleState:
        budget = torch.as_tensor(max_new_tokens, dtype=torch.int64, device=device).expand(num_requests).clone()
        if (budget < 1).any():
            raise ValueError("max_new_tokens must be >= 1 for every request")
        capacity = int(budget.max()) + block_size  # the last block may overshoot the budget before trimming
        shape = (num_requests, num_particles)
        zeros = torch.zeros(shape, dtype=torch.float64, device=device)
        return cls(
            tokens=torch.full((*shape, capacity), PAD_TOKEN, dtype=torch.int64, device=device),
            lengths=torch.zeros(shape, dtype=torch.int64, device=device),
            log_weights=zeros,
            interval_log_weights=zeros.clone(),
            finished=torch.zeros(shape, dtype=torch.bool, device=device),
            log_z=torch.zeros(num_requests, dtype=torch.float64, device=device),
            seeds=seeds.to(device=device, dtype=torch.int64).reshape(num_requests).clone(),
            cycles=torch.zeros(num_requests, dtype=torch.int64, device=device),
            num_resamples=torch.zeros(num_requests, dtype=torch.int64, device=device),
            max_new_tokens=budget,
        )

    @property
    def num_requests(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_particles(self) -> int:
        return int(self.lengths.shape[1])

    @property
    def remaining(self) -> torch.Tensor:
        """[R, N] tokens each particle may still generate."""
        return (self.max_new_tokens.unsqueeze(1) - self.lengths).clamp_min(0)

    @property
    def group_finished(self) -> torch.Tensor:
        """[R] bool: every particle of the request has finished."""
        return self.finished.all(dim=1)

    def append(self, block: torch.Tensor, counts: torch.Tensor) -> None:
        """Write block[r, n, :counts[r, n]] after each particle's current tokens. block [R, N, C], counts [R, N]."""
        cols = torch.arange(block.shape[-1], device=block.device)
        keep = cols < counts.unsqueeze(-1)
        where = (self.lengths.unsqueeze(-1) + cols).clamp_max(self.tokens.shape[-1] - 1)
        current = self.tokens.gather(-1, where)
        self.tokens.scatter_(-1, where, torch.where(keep, block, current))
        self.lengths += counts

    def copy_lineages(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Particle slots `dst` (flat) continue the lineages of `src`: tokens, lengths, finished flags, weights."""
        if dst.numel() == 0:
            return
        width = int(self.lengths.max())  # every token past it is PAD_TOKEN in both lineages: nothing to copy
        tokens = self.tokens[..., :width].flatten(0, 1)
        tokens[dst] = tokens[src]
        for name in ("lengths", "finished", "log_weights", "interval_log_weights"):
            flat = getattr(self, name).flatten(0, 1)
            flat[dst] = flat[src]

    def take(self, rows: torch.Tensor) -> ParticleState:
        """The state of requests `rows` (a copy, or `self` when rows is every request in order)."""
        if rows.numel() == self.num_requests and bool((rows == torch.arange(rows.numel(), device=rows.device)).all()):
            return self
        return ParticleState(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def put(self, rows: torch.Tensor, sub: ParticleState) -> None:
        """Write `sub` into requests `rows`: a state that `take(rows)` returned (and a cycle advanced), or any other
        state whose token buffer is no wider (the rest of those rows' buffers is reset to PAD_TOKEN)."""
        if sub is self:
            return
        width = sub.tokens.shape[-1]
        for f in fields(self):
            if f.name == "tokens" and width < self.tokens.shape[-1]:
                self.tokens[rows, :, width:] = PAD_TOKEN
                self.tokens[rows, :, :width] = sub.tokens
            else:
                getattr(self, f.name)[rows] = getattr(sub, f.name)

    def particle_tokens(self, request: int, particle: int) -> list[int]:
        return self.tokens[request, particle, : int(self.lengths[request, particle])].tolist()
