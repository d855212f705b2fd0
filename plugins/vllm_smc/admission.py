"""Request-time refusals as vLLM logits processors, for deployments that start a server with
`--logits-processors specplug.plugins.vllm_smc.admission:SMCAdmission` (the documented form of earlier releases).

The reasons come from the method's `specplug_refuse_request` hook — the same check the runner patch runs inside
vLLM's own request validation (`runner_hooks.refuse_unsupported`), which is what serves every request today:
vLLM refuses custom logits processors whenever speculative decoding is on. vLLM calls
`LogitsProcessor.validate_params` before `n > 1` fans out and turns a `ValueError` into HTTP 400. The processor
changes no logits. Building it checks, in the worker, that specplug's runner patches took effect, so a server
whose bootstrap failed does not serve plain decoding under a specplug method's name.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor

from specplug.core.errors import SpecplugError
from specplug.core.host import refusal_message


class RefusingAdmission(LogitsProcessor):
    """A logits processor that only refuses the requests its method refuses (changes no logits)."""

    method_name = ""

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        from specplug.plugins.vllm_smc.host import request_context

        message = refusal_message(cls.method_name, request_context("validation", (), sampling_params))
        if message:
            raise ValueError(message)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        del vllm_config, device, is_pin_memory
        from specplug.plugins.vllm_smc.bootstrap import BOOTSTRAP
        from specplug.plugins.vllm_smc.runner_hooks import PATCHER

        patches = PATCHER.report()
        if not patches or not all(p.in_effect for p in patches):
            raise SpecplugError(
                f"{self.method_name} was selected but specplug's vLLM runner patches are not in effect "
                f"(bootstrap: {BOOTSTRAP.state} {BOOTSTRAP.detail}); refusing to serve under its name"
            )

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: Any) -> None:
        del batch_update


def admission_for(method: str) -> type[RefusingAdmission]:
    """The refusing logits processor of any method (a class vLLM can load from a dotted path)."""
    return type(f"{method.capitalize()}Admission", (RefusingAdmission,), {"method_name": method})


# Class paths documented by earlier releases.
SMCAdmission = admission_for("smc")
CSDAdmission = admission_for("csd")
