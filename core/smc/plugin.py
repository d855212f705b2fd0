"""SMC-SD's hook implementations: its description and the requests it refuses, for every host.

SMC-SD's verifier is the particle cycle of `core.smc.sampler`; on vLLM it runs inside the engine-specific
machinery (group scheduler, KV forks: `plugins/vllm_smc/smc_*`), which calls it through `specplug_verify` and
announces every cycle through `specplug_on_step` (ESS and resampling per particle row).

Why each request feature is refused: SMC-SD's importance weights are ratios of the target's and the draft's
*untruncated* tempered distributions, and its output is one particle chosen at the end of the group. Truncation
(top-k/p, min-p), penalties, biases and banned or allowed token sets change the target the weights assume;
per-token logprobs would describe particles that may be discarded; stop strings and extra stop tokens end
particles at points the weights do not cut; n > 1 would multiply the particle groups behind one request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from specplug.core.hookspecs import hookimpl
from specplug.core.smc.config import METHOD
from specplug.core.types import MethodInfo, PluginInfo

if TYPE_CHECKING:
    from specplug.core.types import RequestContext


@hookimpl
def specplug_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="smc",
        engine=None,
        methods=(
            MethodInfo(
                "smc",
                "method",
                "available",
                "SMC-SD: particles weighed and resampled instead of rejected (core.smc)",
                display="SMC-SD",
            ),
        ),
        summary="SMC-SD core: particle cycle, resampling, output choice (engines: see plugins)",
    )


def unsupported_features(sampling: Mapping[str, Any]) -> list[str]:
    """Human-readable reasons why a request's sampling settings cannot be served by SMC-SD; empty when they can."""
    get = sampling.get
    reasons: list[str] = []

    def refuse(condition: bool, text: str) -> None:
        if condition:
            reasons.append(text)

    n = get("n", 1)
    refuse(n != 1, f"n={n} (one SMC particle group per request; send n requests)")
    refuse(
        not (get("temperature", 1.0) or 0) > 0,
        "temperature must be > 0 (SMC-SD samples; use greedy speculation for T=0)",
    )
    refuse(get("top_k") not in (0, -1, None), f"top_k={get('top_k')} (truncation changes the weighted target)")
    refuse(get("top_p", 1.0) < 1.0, f"top_p={get('top_p')} (truncation changes the weighted target)")
    refuse(get("min_p", 0.0) > 0.0, f"min_p={get('min_p')} (truncation changes the weighted target)")
    refuse(get("presence_penalty", 0.0) != 0.0, "presence_penalty (penalties change the weighted target)")
    refuse(get("frequency_penalty", 0.0) != 0.0, "frequency_penalty (penalties change the weighted target)")
    refuse(get("repetition_penalty", 1.0) != 1.0, "repetition_penalty (penalties change the weighted target)")
    refuse(bool(get("logit_bias")), "logit_bias (changes the weighted target)")
    refuse(bool(get("bad_words")), "bad_words (changes the weighted target)")
    refuse(get("allowed_token_ids") is not None, "allowed_token_ids (changes the weighted target)")
    refuse(get("structured_outputs") is not None, "structured outputs (grammar masks change the weighted target)")
    refuse(get("logprobs") is not None, "logprobs (they would describe particles that may be discarded)")
    refuse(get("prompt_logprobs") is not None, "prompt_logprobs")
    refuse(bool(get("stop")), "stop strings (particles end only at EOS or the token budget)")
    refuse(bool(get("stop_token_ids")), "stop_token_ids (particles end only at the model's EOS or the budget)")
    refuse((get("min_tokens") or 0) > 0, "min_tokens (suppressing EOS changes the weighted target)")
    refuse(bool(get("ignore_eos")), "ignore_eos (EOS ends a particle)")
    return reasons


@hookimpl
def specplug_refuse_request(method: str, request: RequestContext) -> list[str] | None:
    return unsupported_features(request.sampling) if method == METHOD else None
