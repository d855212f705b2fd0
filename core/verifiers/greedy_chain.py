"""Greedy chain verification: keep the longest draft prefix that equals the target's arg-max.

Lossless for greedy decoding: the committed tokens are exactly the target's own greedy tokens (up to
floating-point ties), whatever the drafter proposed.
"""

from __future__ import annotations

import torch

from specplug.core.types import DraftBatch, VerifyResult
from specplug.core.verifiers._chain import assemble, leading_true, positions_mask


class GreedyChainVerifier:
    name = "greedy"

    def verify(self, draft: DraftBatch, target_logits: torch.Tensor, **_: object) -> VerifyResult:
        k = draft.max_tokens
        best = target_logits.argmax(dim=-1)  # [B, K+1]
        match = (draft.tokens == best[:, :k]) & positions_mask(draft.num_tokens, k)
        num_accepted = leading_true(match)
        last = best.gather(1, num_accepted.unsqueeze(1)).squeeze(1)
        tokens, verdicts = assemble(draft.tokens, draft.num_tokens, num_accepted, last)
        return VerifyResult(num_accepted=num_accepted, output_tokens=tokens, verdicts=verdicts)
