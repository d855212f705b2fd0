"""Request-time refusals on a CSD server: start it with
`--logits-processors specplug.plugins.vllm_smc.csd_admission:CSDAdmission`.

CSD's rule is defined for greedy decoding (the paper evaluates greedy only, and a rescue breaks the
distribution guarantee of sampling, so there is no principled sampling-mode extension to offer). Without this
processor such requests are still served, by vLLM's standard lossless verification for the steps they share
(`CSDRejectionSampler`); with it they get an HTTP 400 that says why. Building the processor also checks, in the
worker, that specplug's runner patch took effect, so a CSD server whose bootstrap failed does not start.
"""

from __future__ import annotations

from typing import Any

import torch

from specplug.core.csd.config import METHOD
from specplug.core.errors import SpecplugError
from specplug.plugins.vllm_smc.admission import RefusingAdmission


def csd_unsupported(params: Any) -> list[str]:
    reasons: list[str] = []
    if params.temperature > 0:
        reasons.append(f"temperature={params.temperature} (CSD verifies greedy decoding; send temperature=0)")
    if params.logprobs is not None:
        reasons.append("logprobs (rescued tokens are not the target's own choice; their logprobs would mislead)")
    return reasons


class CSDAdmission(RefusingAdmission):
    method_name = METHOD
    display_name = "CSD"
    reasons = staticmethod(csd_unsupported)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        super().__init__(vllm_config, device, is_pin_memory)
        from specplug.plugins.vllm_smc.bootstrap import BOOTSTRAP
        from specplug.plugins.vllm_smc.runner_hooks import PATCHER

        patches = PATCHER.report()
        if not patches or not all(p.in_effect for p in patches):
            raise SpecplugError(
                f"CSD was selected but specplug's vLLM runner patch is not in effect "
                f"(bootstrap: {BOOTSTRAP.state} {BOOTSTRAP.detail}); refusing to serve standard SD under CSD's name"
            )
