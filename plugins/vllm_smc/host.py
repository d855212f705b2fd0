"""vLLM as a specplug host: one `MethodSession` per model runner, and vLLM's request data in engine-neutral form.

The runner patches (`runner_hooks`) call `attach(runner)` right after vLLM builds a model runner: the session is
opened for the method that `--additional-config '{"specplug": {"method": ...}}'` selects, and its pieces fill
vLLM's slots — a proposer fills the drafter slot (`proposer_slot.SpecplugProposer`, vLLM's `custom_class`), a
verifier replaces the rejection sampler (`verifier_slot.SpecplugRejectionSampler`). A method whose engine
machinery is vLLM-specific is listed in `ENGINE_MACHINERY`, the one table of method names in this package.
Every worker process (each tensor-parallel rank) opens its own session; all see the same steps.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from specplug.core.errors import ConfigError
from specplug.core.host import ANONYMOUS_TENANT, MethodSession, claimed_tenant, tenant_from_salt
from specplug.core.patching import Patcher
from specplug.core.types import RequestContext
from specplug.plugins.vllm_smc.settings import method_settings, selected_method

log = logging.getLogger("specplug")

# Methods that need vLLM-specific machinery beyond the generic slots: name -> "module:function" taking the
# runner and its session. The one place in the vLLM adapter that names a method.
ENGINE_MACHINERY = {"smc": "specplug.plugins.vllm_smc.smc_runner:install_smc"}

# Where a request's tools and tenant ride in `SamplingParams.extra_args`: "toolspec" is the documented key (the
# OpenAI server writes it, clients may set it through `vllm_xargs`); the method-neutral "specplug" is read too.
EXTRA_ARGS_KEYS = ("toolspec", "specplug")

# Tenants (`core.host`): the tenant a request's memories learn and draft under is decided in the front end, where
# vLLM builds the engine request (`stamp_tenant`, called on every `InputProcessor.process_inputs` result), and rides
# to the workers under this `extra_args` key. Whatever a client put under it (OpenAI `vllm_xargs`) is dropped there.
# - a request with a `cache_salt` (vLLM's own per-tenant key, which a deployment sets per tenant so tenants' prefix
#   caches stay apart): `core.host.tenant_from_salt`, a digest of the salt;
# - no salt, submitted through the offline engine (`LLM`, `LLMEngine.add_request`: the operator's own code): the
#   `tenant` the caller put in `extra_args["toolspec"]` (or `["specplug"]`), as given;
# - otherwise nothing is stamped: a `tenant` in `extra_args` (the OpenAI `user`, `vllm_xargs`) is a name the client
#   only claims (`core.host.claimed_tenant`), and without a claim the request is anonymous.
TENANT_KEY = "specplug_tenant"
_OPERATOR_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("specplug_operator_call", default=False)

# The sampling settings a method's admission hook may read (`RequestContext.sampling`).
SAMPLING_FIELDS = (
    "n", "temperature", "top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "logit_bias", "bad_words", "allowed_token_ids", "structured_outputs", "logprobs", "prompt_logprobs", "stop",
    "stop_token_ids", "min_tokens", "ignore_eos", "seed", "max_tokens",
)  # fmt: skip


def engine_facts(vllm_config: Any) -> dict[str, Any]:
    model = getattr(vllm_config, "model_config", None)
    spec = getattr(vllm_config, "speculative_config", None)
    return {
        "tokenizer": getattr(model, "tokenizer", None),
        "max_model_len": getattr(model, "max_model_len", None),
        "num_speculative_tokens": getattr(spec, "num_speculative_tokens", None),
        "speculative_method": getattr(spec, "method", None),
    }


def open_session(vllm_config: Any, default_method: str | None = None) -> MethodSession | None:
    """The session of the method a vLLM configuration selects (`default_method` when it names none), with every
    check that needs only the configuration: a bad setting fails here, at startup, naming the setting."""
    method = selected_method(vllm_config)
    if method is not None:
        given = _user_settings(vllm_config, method)
    elif default_method is not None:
        method, given = default_method, {}
    else:
        return None
    session = MethodSession(method, given, engine="vllm", facts=engine_facts(vllm_config))
    if session.verifier is not None:
        spec = getattr(vllm_config, "speculative_config", None)
        if spec is None or getattr(spec, "num_speculative_tokens", None) is None:
            raise ConfigError(
                "speculative_config", None, f"a speculative method that drafts ({method} verifies its drafts), e.g. "
                '--speculative-config \'{"method": "ngram", "num_speculative_tokens": 6}\'', method=method,
            )  # fmt: skip
        rule = getattr(spec, "rejection_sample_method", "standard")
        if rule != "standard":
            raise ConfigError(
                "speculative_config.rejection_sample_method",
                rule,
                f'"standard" ({method} replaces the acceptance rule; it cannot be combined with another one)',
                method=method,
            )
    return session


def attach(runner: Any) -> MethodSession | None:
    """Open the session of the method a freshly built runner's configuration selects, and fill vLLM's slots."""
    from specplug.plugins.vllm_smc.proposer_slot import SpecplugProposer

    drafter = getattr(runner, "drafter", None)
    default = drafter.default_method if isinstance(drafter, SpecplugProposer) else None
    if default is None and isinstance(drafter, SpecplugProposer) and selected_method(runner.vllm_config) is None:
        raise ConfigError(
            "additional_config.specplug.method", None, "the specplug method whose proposer fills specplug.Proposer"
        )
    session = open_session(runner.vllm_config, default)
    if session is None:
        return None
    runner.specplug_session = session
    machinery = ENGINE_MACHINERY.get(session.method)
    if machinery is not None:
        module, function = machinery.split(":")
        getattr(__import__(module, fromlist=[function]), function)(runner, session)
    else:
        _route_engine_drafter(runner, session)
    _fill_drafter_slot(runner, session)
    _fill_verifier_slot(runner, session)
    atexit.register(close, runner)  # orderly exits of this process; servers also close through `specplug_rpc`
    log.info("specplug: method %s attached to the vLLM model runner", session.method)
    return session


def _user_settings(vllm_config: Any, method: str) -> dict[str, Any]:
    given = method_settings(vllm_config, method)
    if method in ENGINE_MACHINERY:  # the machinery reads its own adapter settings (smc_settings.PLUGIN_SETTINGS)
        from specplug.plugins.vllm_smc.smc_settings import PLUGIN_SETTINGS

        for key in PLUGIN_SETTINGS:
            given.pop(key, None)
    return given


def _fill_drafter_slot(runner: Any, session: MethodSession) -> None:
    from specplug.plugins.vllm_smc.proposer_slot import SpecplugProposer

    drafter = getattr(runner, "drafter", None)
    if isinstance(drafter, SpecplugProposer):
        drafter.bind(runner, session)
    elif session.proposer is not None:
        raise ConfigError(
            "speculative_config",
            getattr(getattr(runner, "speculative_config", None), "method", None),
            f"specplug's proposer slot for method {session.method!r}: --speculative-config "
            '\'{"model": "specplug.Proposer", "num_speculative_tokens": 8}\'',
            method=session.method,
        )


def _route_engine_drafter(runner: Any, session: MethodSession) -> None:
    """vLLM's own drafter (ngram, draft_model, EAGLE...) drafting for a specplug verifier is called through
    `specplug_propose`, so wrappers see every drafting call whoever drafts (engine machinery routes its own)."""
    from specplug.plugins.vllm_smc.proposer_slot import SpecplugProposer

    drafter = getattr(runner, "drafter", None)
    if drafter is None or isinstance(drafter, SpecplugProposer):
        return
    original = drafter.propose

    def propose(*args: Any, **kwargs: Any) -> Any:
        return session.engine_propose(original, *args, **kwargs)

    patcher = Patcher("vllm")
    patcher.patch(drafter, "propose", propose, reason="engine drafting through specplug_propose", allow_add=True)
    patcher.verify()


def _fill_verifier_slot(runner: Any, session: MethodSession) -> None:
    if session.verifier is None:
        return
    if getattr(runner, "rejection_sampler", None) is None:
        raise ConfigError(
            "speculative_config", None, f"a speculative method ({session.method} verifies its drafts)",
            method=session.method,
        )  # fmt: skip
    from specplug.plugins.vllm_smc.verifier_slot import SpecplugRejectionSampler

    runner.rejection_sampler = SpecplugRejectionSampler(
        runner.sampler, runner.speculative_config, runner.device, session=session
    )


def sampling_settings(params: Any) -> dict[str, Any]:
    return {name: getattr(params, name, None) for name in SAMPLING_FIELDS}


def request_extra(params: Any) -> dict[str, Any]:
    return _extra_of(getattr(params, "extra_args", None) or {})


@contextlib.contextmanager
def operator_call() -> Iterator[None]:
    """Requests submitted inside come from the operator's own code (the offline engine), not from a client."""
    token = _OPERATOR_CALL.set(True)
    try:
        yield
    finally:
        _OPERATOR_CALL.reset(token)


def stamp_tenant(request: Any) -> None:
    """Front end: write the tenant of an engine request (`EngineCoreRequest`: `cache_salt`, `sampling_params`)
    under `TENANT_KEY`, replacing whatever a client put there (see `TENANT_KEY`)."""
    params = getattr(request, "sampling_params", None)
    if params is None or not hasattr(params, "extra_args"):
        return
    extra = dict(params.extra_args or {})
    forged = extra.pop(TENANT_KEY, None) is not None
    tenant = tenant_from_salt(getattr(request, "cache_salt", None))
    if tenant == ANONYMOUS_TENANT and _OPERATOR_CALL.get():
        named = _named_tenant(_extra_of(extra))
        tenant = named if named is not None else ANONYMOUS_TENANT
    if tenant != ANONYMOUS_TENANT:
        extra[TENANT_KEY] = tenant
    if tenant != ANONYMOUS_TENANT or forged:
        params.extra_args = extra or None


def request_tenant(params: Any) -> str:
    """Worker: the tenant the front end stamped; else a client's claim (`core.host.CLAIMED`), else anonymous."""
    stamped = (getattr(params, "extra_args", None) or {}).get(TENANT_KEY)
    if isinstance(stamped, str) and stamped:
        return stamped
    return claimed_tenant(_named_tenant(request_extra(params)))


def _named_tenant(extra: Any) -> str | None:
    name = extra.get("tenant") if isinstance(extra, dict) else None
    return name if isinstance(name, str) and name else None


def extra_args_problem(extra_args: Any) -> str | None:
    """Why a request's specplug extra args (OpenAI `vllm_xargs`, or `SamplingParams.extra_args`) are malformed, or
    None: each key of EXTRA_ARGS_KEYS holds an object whose `tools` is a list of objects and `tenant` a string."""
    if not isinstance(extra_args, dict):
        return None
    for key in EXTRA_ARGS_KEYS:
        if key not in extra_args:
            continue
        value = extra_args[key]
        if not isinstance(value, dict):
            return f"extra args {key!r} must be an object (with optional 'tools' and 'tenant'), got {value!r:.80}"
        tools = value.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
            return f"extra args {key}.tools must be a list of OpenAI tool objects, got {tools!r:.80}"
        tenant = value.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            return f"extra args {key}.tenant must be a string, got {tenant!r:.80}"
    return None


def _extra_of(extra_args: dict[str, Any]) -> dict[str, Any]:
    for key in EXTRA_ARGS_KEYS:
        if isinstance(extra_args.get(key), dict):
            return extra_args[key]
    return {}


def request_context(request_id: str, prompt_token_ids: Any, params: Any) -> RequestContext:
    extra = request_extra(params)
    return RequestContext(
        request_id=request_id,
        prompt_token_ids=list(prompt_token_ids or []),
        tenant=request_tenant(params) if params is not None else ANONYMOUS_TENANT,
        sampling=sampling_settings(params) if params is not None else {},
        tools=extra.get("tools"),
    )


def close(runner: Any) -> None:
    """Orderly end of a runner's session: requests it still holds (vLLM announces a finish only with the next step,
    so the last ones of an idle engine are still here) leave first, then the close hooks persist memories."""
    session = session_of(runner)
    if session is None or session.closed:
        return
    announce_finished(runner, session, list(runner.requests))
    session.close()


def announce_finished(runner: Any, session: Any, request_ids: Sequence[str]) -> None:
    """Requests vLLM is about to drop from the runner leave through the session (their state is still there)."""
    for rid in request_ids:
        state = runner.requests.get(rid)
        if state is None:
            continue
        output = list(state.output_token_ids)
        session.request_finished(rid, len(output), "finished", output_token_ids=output)
    forget = getattr(getattr(runner, "drafter", None), "forget", None)
    if callable(forget):
        forget(request_ids)


def session_of(runner: Any) -> MethodSession | None:
    return getattr(runner, "specplug_session", None)
