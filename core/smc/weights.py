"""The per-cycle importance-weight arithmetic of SMC-SD, over a flat batch of particle rows.

The sequence-level target is π(x) ∝ Π_t p_T(x_t | x_<t)^α. A particle's draft token d_k was sampled from q, so
its incremental log-weight is α·log p_T(d_k) − log q(d_k); the bonus token is sampled from the local power
conditional p_T^α / Z_b, so its increment is log Z_b (zero at α = 1). Columns after the first EOS, or past a
particle's token budget, are not part of the sequence and contribute nothing (EOS is absorbing).
"""

from __future__ import annotations

import torch

from specplug.core.smc.rng import gumbel_argmax


def target_log_probs(target_logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p_T(token) for each position: target_logits [B, K, V], tokens [B, K] → [B, K] float64."""
    scaled = target_logits if temperature == 1 else target_logits / temperature  # no copy of [B, K, V] at T = 1
    picked = scaled.gather(-1, tokens.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    # logsumexp in the logits' own dtype: converting [B, K, V] to float64 would cost more than the whole cycle.
    return picked.double() - torch.logsumexp(scaled, dim=-1).double()


def sample_power(
    logits: torch.Tensor, alpha: float, temperature: float, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample from softmax(α·z/T) with one key per row; also return log Z_b.

    logits [B, V], keys [B] int64 (`rng.stream_keys`) → tokens [B] int64, log Z_b [B] = logsumexp(α z/T) −
    α·logsumexp(z/T). The draw is Gumbel-max over keyed per-token uniforms (`rng.gumbel_argmax`): exact, and
    robust to the last-bit differences between tensor-parallel sizes.
    """
    if alpha == 1:  # the draw divides by T in float64 chunk by chunk; log Z_b = 0
        zero = torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)
        return gumbel_argmax(logits, keys, divisor=temperature), zero
    scaled = logits.double() / temperature
    lse_scaled = torch.logsumexp(scaled, dim=-1)
    powered = alpha * scaled
    return gumbel_argmax(powered, keys), torch.logsumexp(powered, dim=-1) - alpha * lse_scaled


def first_eos_column(tokens: torch.Tensor, eos_ids: torch.Tensor) -> torch.Tensor:
    """Index of the first EOS in each row of tokens [B, C]; C when there is none."""
    is_eos = torch.isin(tokens, eos_ids)
    cols = tokens.shape[1]
    index = torch.arange(cols, device=tokens.device).expand_as(tokens)
    return torch.where(is_eos, index, cols).min(dim=1).values


def block_increment(delta: torch.Tensor, log_z_bonus: torch.Tensor, last_column: torch.Tensor) -> torch.Tensor:
    """Sum of a block's log-weight increments over columns 0..last_column (−1 = none) of the γ+1 committed tokens.

    delta [B, γ] are the draft columns' α·log p_T − log q; column γ is the bonus with increment log Z_b.
    """
    gamma = delta.shape[1]
    keep = torch.arange(gamma, device=delta.device).unsqueeze(0) <= last_column.unsqueeze(1)
    drafts = torch.where(keep, delta, torch.zeros_like(delta)).sum(dim=1)
    return drafts + torch.where(last_column >= gamma, log_z_bonus, torch.zeros_like(log_z_bonus))
