"""Any specplug verifier inside vLLM's sampler: a `RejectionSampler` that asks the session's verifier.

vLLM has no registry for verifiers; the V1 model runner calls `self.rejection_sampler(metadata, draft_probs,
logits, sampling_metadata)` (`vllm/v1/worker/gpu_model_runner.py` in 0.32.0) and expects a `SamplerOutput` whose
`sampled_token_ids` is int32 [batch, max_spec_len + 1] with -1 after the last committed token. This class keeps
that contract, so the scheduler, KV bookkeeping and vLLM's own spec-decode metrics work unchanged, whichever
method the session runs.

The verifier is called through `specplug_verify` with the draft as a [B, K] `DraftBatch`. Verifiers that declare
`flat_layout = True` get vLLM's flat [T, V] target logits and the bonus tokens (`layout="flat"`), so no logits are
copied; others get [B, K+1, V] logits, padded here. Every real step is announced through `specplug_on_step`
(with the verifier's `mismatches`, which CSD's memory learns from); vLLM's warm-up steps are not (`warming_up`).
Specplug verifiers judge greedy decoding: a step whose batch holds a sampled request or asks for logprobs is
verified by vLLM's own lossless rule and announced as a fallback (the front end refuses such requests where the
method says so, through `specplug_refuse_request`).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.outputs import SamplerOutput
from vllm.v1.sample.rejection_sampler import RejectionSampler

from specplug.core.host import MethodSession
from specplug.core.types import PAD_TOKEN, DraftBatch, StepOutcome


class SpecplugRejectionSampler(RejectionSampler):
    """vLLM's rejection sampler with the session's verifier on all-greedy steps."""

    def __init__(self, sampler: Any, spec_config: Any, device: Any, *, session: MethodSession) -> None:
        super().__init__(sampler, spec_config, device)
        self.session = session
        self.warming_up = False
        self.req_ids: list[str] = []  # the runner's rows of the current step (set by the runner patch)

    def forward(self, metadata: Any, draft_probs: Any, logits: torch.Tensor, sampling_metadata: Any) -> SamplerOutput:
        if not sampling_metadata.all_greedy or sampling_metadata.max_num_logprobs is not None:
            output = super().forward(metadata, draft_probs, logits, sampling_metadata)
            if not self.warming_up:
                self._announce(metadata, output.sampled_token_ids, None, fallback=True)
            return output
        bonus = self.sampler(
            logits=logits[metadata.bonus_logits_indices], sampling_metadata=sampling_metadata, predict_bonus_token=True
        ).sampled_token_ids.reshape(-1)
        draft = _draft_batch(metadata)
        verifier = self.session.verifier
        ids = self._row_ids(len(metadata.num_draft_tokens))
        if getattr(verifier, "flat_layout", False):
            target = logits[metadata.target_logits_indices].to(torch.float32)
            target = self.apply_logits_processors(target, sampling_metadata, metadata)
            result = self.session.verify(draft, target, layout="flat", bonus=bonus, request_ids=ids)
        else:
            result = self.session.verify(draft, _padded_logits(metadata, logits, draft), request_ids=ids)
        if not self.warming_up:
            self._announce(metadata, None, result)
        return SamplerOutput(sampled_token_ids=result.output_tokens.to(torch.int32), logprobs_tensors=None)

    def _row_ids(self, batch: int) -> list[str]:
        """The request id of each row of this step (set by the runner patch; positions when it did not run)."""
        return self.req_ids[:batch] if len(self.req_ids) >= batch else [str(i) for i in range(batch)]

    def _announce(self, metadata: Any, sampled: torch.Tensor | None, result: Any, fallback: bool = False) -> None:
        num = torch.tensor(metadata.num_draft_tokens, dtype=torch.int64)
        if result is None:  # vLLM's own rule: accepted = committed - 1
            accepted = ((sampled != PAD_TOKEN).sum(dim=1) - 1).clamp_min(0).cpu()
            rescued, extra = None, {"fallback": True}
        else:
            accepted = result.num_accepted.cpu()
            rescued = getattr(result, "num_rescued", None)
            extra = {}
            for key in ("mismatches", "mismatch_rows"):  # what CSD learns, and whose rows taught it
                if getattr(result, key, None) is not None:
                    extra[key] = getattr(result, key)
        ids = self._row_ids(len(num))
        self.session.step(
            StepOutcome(request_ids=ids, num_proposed=num, num_accepted=accepted, num_rescued=rescued, extra=extra)
        )


def _draft_batch(metadata: Any) -> DraftBatch:
    """vLLM's flat draft tokens as [B, max_spec_len] rows (PAD_TOKEN past each row's count)."""
    flat = metadata.draft_token_ids.to(torch.int64)
    num = torch.tensor(metadata.num_draft_tokens, dtype=torch.int64, device=flat.device)
    width = metadata.max_spec_len
    start = metadata.cu_num_draft_tokens.to(torch.int64) - num
    pos = torch.arange(width, device=flat.device)
    valid = pos.unsqueeze(0) < num.unsqueeze(1)
    if flat.numel() == 0:
        tokens = torch.full((len(num), width), PAD_TOKEN, dtype=torch.int64, device=flat.device)
    else:
        index = (start.unsqueeze(1) + pos).clamp(0, flat.numel() - 1)
        tokens = torch.where(valid, flat[index], PAD_TOKEN)
    return DraftBatch(tokens=tokens, num_tokens=num)


def _padded_logits(metadata: Any, logits: torch.Tensor, draft: DraftBatch) -> torch.Tensor:
    """[B, K+1, V]: each row's draft positions, then its bonus position (the last one repeated past the count)."""
    ends = metadata.cu_num_sampled_tokens.to(torch.int64)  # one past each row's bonus position
    starts = ends - draft.num_tokens - 1
    pos = torch.arange(draft.max_tokens + 1, device=ends.device)
    index = torch.minimum(starts.unsqueeze(1) + pos, (ends - 1).unsqueeze(1))
    return logits[index].to(torch.float32)
