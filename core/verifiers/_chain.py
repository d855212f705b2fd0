"""Shared pieces of chain verification: turning "how many accepted" into committed tokens and verdicts."""

from __future__ import annotations

import torch

from specplug.core.types import PAD_TOKEN, TokenVerdict


def positions_mask(num: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width] bool: True at positions < num[b]."""
    return torch.arange(width, device=num.device).unsqueeze(0) < num.unsqueeze(1)


def leading_true(mask: torch.Tensor) -> torch.Tensor:
    """[B] number of leading True values per row (first-rejection index), without a Python loop."""
    return mask.to(torch.int64).cumprod(dim=1).sum(dim=1)


def assemble(
    draft_tokens: torch.Tensor, num_drafted: torch.Tensor, num_accepted: torch.Tensor, last_token: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output tokens [B, K+1] = accepted drafts then `last_token`; verdicts mark EXACT / CORRECTED / BONUS."""
    batch, k = draft_tokens.shape
    pos = torch.arange(k + 1, device=draft_tokens.device).unsqueeze(0)
    padded = torch.cat([draft_tokens, draft_tokens.new_full((batch, 1), PAD_TOKEN)], dim=1)
    out = torch.where(pos < num_accepted.unsqueeze(1), padded, torch.full_like(padded, PAD_TOKEN))
    out.scatter_(1, num_accepted.unsqueeze(1), last_token.unsqueeze(1))
    last_verdict = torch.where(num_accepted == num_drafted, TokenVerdict.BONUS, TokenVerdict.CORRECTED)
    verdicts = torch.where(pos < num_accepted.unsqueeze(1), TokenVerdict.EXACT, PAD_TOKEN).to(torch.int64)
    verdicts.scatter_(1, num_accepted.unsqueeze(1), last_verdict.unsqueeze(1).to(torch.int64))
    return out, verdicts
