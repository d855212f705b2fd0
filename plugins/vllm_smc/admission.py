"""Request-time refusals for SMC-SD on vLLM: a request asking for something SMC-SD cannot honour gets an HTTP 400
with the reason, before it reaches the engine core (never a crash mid-serving).

vLLM calls `LogitsProcessor.validate_params` for every request of a server started with
`--logits-processors specplug.plugins.vllm_smc.admission:SMCAdmission`, before `n > 1` fans out, and turns a
`ValueError` into a validation error (HTTP 400). The processor itself changes no logits.

Why each feature is refused: SMC-SD's importance weights are ratios of the target's and the draft's *untruncated*
tempered distributions, and its output is one particle chosen at the end of the group. Truncation (top-k/p,
min-p), penalties, biases and banned or allowed token sets change the target the weights assume; per-token
logprobs would describe particles that may be discarded; stop strings and extra stop tokens end particles at
points the weights do not cut; n > 1 would multiply the particle groups behind one request.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor

from specplug.core.smc.config import METHOD


def unsupported_features(params: Any) -> list[str]:
    """Human-readable reasons why a vLLM SamplingParams cannot be served by SMC-SD; empty when it can."""
    reasons: list[str] = []

    def refuse(condition: bool, text: str) -> None:
        if condition:
            reasons.append(text)

    refuse(getattr(params, "n", 1) != 1, f"n={params.n} (one SMC particle group per request; send n requests)")
    refuse(not params.temperature > 0, "temperature must be > 0 (SMC-SD samples; use greedy speculation for T=0)")
    refuse(params.top_k not in (0, -1, None), f"top_k={params.top_k} (truncation changes the weighted target)")
    refuse(params.top_p < 1.0, f"top_p={params.top_p} (truncation changes the weighted target)")
    refuse(params.min_p > 0.0, f"min_p={params.min_p} (truncation changes the weighted target)")
    refuse(params.presence_penalty != 0.0, "presence_penalty (penalties change the weighted target)")
    refuse(params.frequency_penalty != 0.0, "frequency_penalty (penalties change the weighted target)")
    refuse(params.repetition_penalty != 1.0, "repetition_penalty (penalties change the weighted target)")
    refuse(bool(params.logit_bias), "logit_bias (changes the weighted target)")
    refuse(bool(params.bad_words), "bad_words (changes the weighted target)")
    refuse(params.allowed_token_ids is not None, "allowed_token_ids (changes the weighted target)")
    refuse(params.structured_outputs is not None, "structured outputs (grammar masks change the weighted target)")
    refuse(params.logprobs is not None, "logprobs (they would describe particles that may be discarded)")
    refuse(params.prompt_logprobs is not None, "prompt_logprobs")
    refuse(bool(params.stop), "stop strings (particles end only at EOS or the token budget)")
    refuse(bool(params.stop_token_ids), "stop_token_ids (particles end only at the model's EOS or the budget)")
    refuse(params.min_tokens > 0, "min_tokens (suppressing EOS changes the weighted target)")
    refuse(bool(params.ignore_eos), "ignore_eos (EOS ends a particle)")
    return reasons


class RefusingAdmission(LogitsProcessor):
    """A logits processor that only refuses requests (changes no logits); subclasses say what and why."""

    method_name = "specplug"
    display_name = "specplug"

    @staticmethod
    def reasons(sampling_params: Any) -> list[str]:
        raise NotImplementedError

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        reasons = cls.reasons(sampling_params)
        if reasons:
            raise ValueError(
                f"{cls.method_name}: this request cannot be served with {cls.display_name}: " + "; ".join(reasons)
            )

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        del vllm_config, device, is_pin_memory

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: Any) -> None:
        del batch_update


class SMCAdmission(RefusingAdmission):
    """Refuses requests SMC-SD cannot serve; changes no logits."""

    method_name = METHOD
    display_name = "SMC-SD"
    reasons = staticmethod(unsupported_features)
