"""Standard speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023).

Draft token x at position j is kept with probability min(1, p_j(x) / q_j(x)); at the first rejection the
replacement is drawn from the normalized residual max(0, p_j − q_j); after a fully accepted draft a bonus token is
drawn from p_K. The committed sequence is then distributed exactly as the target's own sampling (lossless in
distribution), which the tests check on enumerable toy models.

`p` is the target's distribution after temperature; `draft.probs` must be the drafter's distribution after the
same kind of processing, since the guarantee holds for whatever q actually generated the draft.
"""

from __future__ import annotations

import torch

from specplug.core.errors import ConfigError
from specplug.core.types import DraftBatch, VerifyResult
from specplug.core.verifiers._chain import assemble, leading_true, positions_mask


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Normalized max(0, p − q) per row; falls back to p where p == q (the residual is empty)."""
    resid = (p - q).clamp_min(0)
    mass = resid.sum(dim=-1, keepdim=True)
    return torch.where(mass > 0, resid / mass.clamp_min(torch.finfo(resid.dtype).tiny), p)


class RejectionSamplingVerifier:
    name = "rejection"

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ConfigError("temperature", temperature, "> 0 (use the greedy verifier for temperature 0)")
        self.temperature = float(temperature)

    def target_probs(self, target_logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(target_logits.double() / self.temperature, dim=-1)

    def verify(
        self, draft: DraftBatch, target_logits: torch.Tensor, generator: torch.Generator | None = None, **_: object
    ) -> VerifyResult:
        batch, k = draft.tokens.shape
        if draft.probs is None and k > 0:
            raise ValueError("rejection sampling needs the drafter's distributions (DraftBatch.probs)")
        p = self.target_probs(target_logits)  # [B, K+1, V]
        q = draft.probs.double() if k > 0 else p.new_zeros((batch, 0, p.shape[-1]))  # [B, K, V]
        valid = positions_mask(draft.num_tokens, k)
        x = draft.tokens.clamp_min(0).unsqueeze(-1)
        p_x = p[:, :k].gather(-1, x).squeeze(-1)
        q_x = q.gather(-1, x).squeeze(-1)
        u = torch.rand((batch, k), generator=generator, dtype=torch.float64, device=p.device)
        accepted = (u * q_x < p_x) & valid  # u < p/q without dividing by a possibly tiny q
        num_accepted = leading_true(accepted)

        index = num_accepted.view(batch, 1, 1).expand(batch, 1, p.shape[-1])
        p_n = p.gather(1, index).squeeze(1)
        q_pad = torch.cat([q, q.new_zeros((batch, 1, q.shape[-1]))], dim=1)
        rejected = (num_accepted < draft.num_tokens).unsqueeze(1)
        q_n = torch.where(rejected, q_pad.gather(1, index).squeeze(1), torch.zeros_like(p_n))
        last = torch.multinomial(residual_distribution(p_n, q_n), 1, generator=generator).squeeze(1)
        tokens, verdicts = assemble(draft.tokens, draft.num_tokens, num_accepted, last)
        return VerifyResult(num_accepted=num_accepted, output_tokens=tokens, verdicts=verdicts)
