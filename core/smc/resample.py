"""Resampling over particle groups, and the fork plan engines apply to token histories and KV blocks.

Weights are per request over its N particles ([R, N] tensors). Resampling draws offspring counts; the fork plan
then keeps every surviving particle in its own slot and writes extra copies only into the slots of particles
that died. Engines therefore copy src → dst for the listed pairs only, and no source is ever overwritten
before it is read (every source survives), which is what an in-place KV block fork needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def normalized_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """Per-request self-normalized weights, float64 [R, N]."""
    return torch.softmax(log_weights.double(), dim=-1)


def effective_sample_size(weights: torch.Tensor) -> torch.Tensor:
    """ESS = 1 / Σ w̄² per request (N for uniform weights, 1 when one particle holds all the mass)."""
    return 1.0 / (weights * weights).sum(dim=-1)


def _cdf(weights: torch.Tensor) -> torch.Tensor:
    cdf = torch.cumsum(weights, dim=-1)
    cdf[..., -1] = 1.0  # guard the top end against rounding
    return cdf


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index drawn from each row of probs [R, K] by the uniforms u [R, M] (or [R]): int64 [R, M] (or [R])."""
    squeeze = u.dim() == 1
    u = u.unsqueeze(-1) if squeeze else u
    index = torch.searchsorted(_cdf(probs), u.to(probs.dtype), right=True).clamp_max(probs.shape[-1] - 1)
    return index.squeeze(-1) if squeeze else index


def systematic_counts(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Offspring counts from systematic resampling: N points (u + k)/N, k = 0..N−1, with one u per request.

    The number of points below c is ceil(N·c − u), so particle i gets ceil(N·C_i − u) − ceil(N·C_{i−1} − u),
    which is always ⌊N·w̄_i⌋ or ⌈N·w̄_i⌉ and has expectation N·w̄_i. weights [R, N], u [R] → int64 [R, N].
    """
    n = weights.shape[-1]
    below = torch.ceil(n * _cdf(weights) - u.unsqueeze(-1)).clamp(0, n).to(torch.int64)
    return torch.diff(below, dim=-1, prepend=torch.zeros_like(below[:, :1]))


def multinomial_counts(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Offspring counts from N independent draws per request. weights [R, N], u [R, N] → int64 [R, N]."""
    ancestors = inverse_cdf(weights, u)
    counts = torch.zeros_like(ancestors)
    return counts.scatter_add_(1, ancestors, torch.ones_like(ancestors))


@dataclass
class ForkPlan:
    """What an engine must do after a resampling decision.

    ancestors: [R, N] int64 — slot whose lineage each slot continues (itself for survivors).
    dst, src:  [M] int64 flat slot indices (request·N + particle): copy lineage src into dst, for dead slots only.
    resampled: [R] bool — groups that resampled this cycle (their weights were reset).
    """

    ancestors: torch.Tensor
    dst: torch.Tensor
    src: torch.Tensor
    resampled: torch.Tensor

    @property
    def num_copies(self) -> int:
        return int(self.dst.numel())

    @staticmethod
    def identity(num_requests: int, num_particles: int, device: torch.device | None = None) -> ForkPlan:
        ancestors = torch.arange(num_particles, device=device).expand(num_requests, num_particles).clone()
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return ForkPlan(ancestors, empty, empty.clone(), torch.zeros(num_requests, dtype=torch.bool, device=device))


def fork_plan(counts: torch.Tensor, resampled: torch.Tensor) -> ForkPlan:
    """Turn offspring counts [R, N] (rows summing to N) into an in-place fork plan.

    Per request, the dead slots (count 0) in order receive the extra copies (count − 1 of each survivor) in
    order; both lists are built request-major, so they pair up within each request.
    """
    num_requests, n = counts.shape
    flat = torch.arange(num_requests * n, device=counts.device)
    dst = flat[(counts == 0).reshape(-1)]
    src = torch.repeat_interleave(flat, (counts - 1).clamp_min(0).reshape(-1))
    ancestors = flat.clone()
    ancestors[dst] = src
    return ForkPlan(ancestors.view(num_requests, n) % n, dst, src, resampled)


def resample_log_normalizer(log_weights: torch.Tensor) -> torch.Tensor:
    """log of the mean weight, logsumexp(ι) − log N: the factor each resampling contributes to log Ẑ."""
    return torch.logsumexp(log_weights.double(), dim=-1) - math.log(log_weights.shape[-1])
