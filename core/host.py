"""The engine side of the seam: what every engine adapter (and the reference runner) does through pluggy.

An engine adapter is a *host*. For each engine instance whose flags select a specplug method it opens one
`MethodSession`, which asks the plugin manager for that method's memory, proposer and verifier (any of them may be
None: the engine's own drafter or acceptance rule then does that part), and then announces, through the observer
hooks, every request start, every verify step and every request finish, and the orderly close. Online learning,
metrics and tracing are hook implementations that listen there, so they behave the same on vLLM, SGLang,
TensorRT-LLM and the reference runner, and a third-party method needs no engine file changed.

Sessions are per process: an engine with several workers (tensor parallelism) opens one per worker; every rank
sees the same steps in the same order, so every rank's memories take the same decisions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from specplug.core.config import with_draft_length
from specplug.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from specplug.core.plugin_manager import SpecplugPluginManager
    from specplug.core.types import DraftBatch, Proposer, RequestContext, StepOutcome, Verifier, VerifyResult


class MethodSession:
    """One engine instance's specplug method: what the plugin manager built for it, and the host's announcements.

    method:  the method's name, as the user selected it with the engine's flags.
    config:  the method's settings as the user gave them (validated by the plugin that builds the pieces).
    engine:  "vllm", "sglang", "trtllm" or "reference".
    facts:   what the engine knows and the method may need (`tokenizer`, `num_speculative_tokens`, `vocab_size`).
    data:    scratch space for hook implementations keyed by their own name (metrics counters, trace files).
    """

    def __init__(
        self,
        method: str,
        config: Mapping[str, Any] | None = None,
        *,
        engine: str,
        facts: Mapping[str, Any] | None = None,
        pm: SpecplugPluginManager | None = None,
    ) -> None:
        pm = pm or _shared_pm()
        self.method = method
        self.config: dict[str, Any] = dict(config or {})
        self.engine = engine
        self.facts: dict[str, Any] = dict(facts or {})
        self.pm = pm
        self.data: dict[str, Any] = {}
        self.closed = False
        self.memory: Any = None
        self.proposer: Proposer | None = None
        self.verifier: Verifier | None = None
        hook = pm.hook
        self.memory = hook.specplug_make_memory(kind=method, config=self.config, session=self)
        self.proposer = hook.specplug_make_proposer(method=method, config=self.config, session=self)
        self.verifier = hook.specplug_make_verifier(method=method, config=self.config, session=self)
        if self.memory is None and self.proposer is None and self.verifier is None and not self._declared():
            known = ", ".join(sorted({m.name for m in pm.methods() if m.role in ("method", "proposer", "verifier")}))
            raise ConfigError("method", method, f"a method an installed plugin provides: {known}")

    def _declared(self) -> bool:
        """A method may rely on engine machinery only (SMC-SD on vLLM): it is known if a plugin lists it."""
        return any(m.name == self.method for m in self.pm.methods())

    # --- wrapped calls (wrappers time or trace them) -----------------------------------------------------------

    def propose(self, contexts: Sequence[Sequence[int]], **options: Any) -> DraftBatch:
        if self.proposer is None:
            raise RuntimeError(f"specplug: method {self.method!r} has no proposer of its own")
        return self.pm.hook.specplug_propose(proposer=self.proposer, contexts=contexts, options=options)

    def engine_propose(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """The engine's own drafter (`call(*args, **kwargs)`), called through `specplug_propose` so wrappers see
        every drafting call whoever drafts. Returns what the engine's call returns."""
        options = {"args": args, "kwargs": kwargs}
        return self.pm.hook.specplug_propose(proposer=EngineProposer(call), contexts=(), options=options)

    def verify(self, draft: DraftBatch, target_logits: torch.Tensor, **options: Any) -> VerifyResult:
        if self.verifier is None:
            raise RuntimeError(f"specplug: method {self.method!r} has no verifier of its own")
        return self.pm.hook.specplug_verify(
            verifier=self.verifier, draft=draft, target_logits=target_logits, options=options
        )

    # --- announcements ---------------------------------------------------------------------------------------

    def request_started(self, request: RequestContext) -> None:
        self.pm.hook.specplug_on_request_start(request=request, session=self)

    def step(self, outcome: StepOutcome) -> None:
        self.pm.hook.specplug_on_step(outcome=outcome, session=self)

    def request_finished(
        self,
        request_id: str,
        num_output_tokens: int = 0,
        finish_reason: str = "stop",
        output_token_ids: Sequence[int] | None = None,
    ) -> None:
        self.pm.hook.specplug_on_request_finish(
            request_id=request_id,
            num_output_tokens=num_output_tokens,
            finish_reason=finish_reason,
            session=self,
            output_token_ids=output_token_ids,
        )

    def close(self) -> None:
        """Orderly shutdown: hooks persist what must survive. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.pm.hook.specplug_on_session_close(session=self)

    def reset_memory(self) -> None:
        """Back to the memory the session started with (its `memory_path`, or empty): what a benchmark does after
        warm-up so that a cold arm is really cold."""
        for piece in (self.proposer, self.verifier):
            reset = getattr(piece, "reset_memory", None)
            if callable(reset):
                reset()
                self.memory = getattr(piece, "bank", self.memory)

    def report(self) -> dict[str, Any]:
        """What the hook implementations keep for this session (metrics counters, memory summaries)."""
        found: dict[str, Any] = {"method": self.method, "engine": self.engine}
        for key, value in self.data.items():
            summary = getattr(value, "summary", None)
            found[key] = summary() if callable(summary) else value
        memory_summary = getattr(self.memory, "summary", None)
        if callable(memory_summary):
            found["memory"] = memory_summary()
        return found


# Tenants: the name under which a method's memories learn from a request's outputs and draft for it. A host derives
# it only from what the deployment controls (vLLM: the request's `cache_salt`, or a name the operator's own offline
# code gives; TensorRT-LLM: the operator's `tenant`/`tenant_for`), never from a field any client may fill in. The
# empty name is the anonymous tenant: its requests share nothing (they neither learn into nor draft from any memory
# that outlives the request). Names a client merely claims carry the `CLAIMED` prefix; a method treats them as
# anonymous unless its operator opted in.
ANONYMOUS_TENANT = ""
SALTED = "salt:"
CLAIMED = "claimed:"


def tenant_from_salt(salt: str | None) -> str:
    """The tenant of a request whose deployment set `salt` (vLLM's `cache_salt`, the key vLLM already separates
    prefix caches by): `"salt:"` + 32 hex digits of its SHA-256, never the salt itself (memory files and reports
    name tenants; a salt is a secret). No salt: the anonymous tenant."""
    if not isinstance(salt, str) or not salt:
        return ANONYMOUS_TENANT
    return SALTED + hashlib.sha256(salt.encode("utf-8")).hexdigest()[:32]


def claimed_tenant(name: Any) -> str:
    """A tenant name a client chose itself (OpenAI's `user`, `vllm_xargs`): untrusted, marked as such."""
    if not isinstance(name, str) or not name:
        return ANONYMOUS_TENANT
    return CLAIMED + name


def draft_budget(given: Mapping[str, Any], session: MethodSession | None, key: str, method: str) -> dict[str, Any]:
    """`given` with the host's draft length (`facts["num_speculative_tokens"]`) as `key` (`with_draft_length`)."""
    k = (session.facts if session is not None else {}).get("num_speculative_tokens")
    return with_draft_length(given, key, k, method=method)


class EngineProposer:
    """An engine's own drafter behind the `Proposer` protocol, so a host's calls to it go through
    `specplug_propose` too (wrappers see every drafting call, whoever drafts). `options["args"]` and
    `options["kwargs"]` are the engine's own call arguments."""

    name = "engine"

    def __init__(self, call: Any) -> None:
        self.call = call

    def propose(self, contexts: Sequence[Sequence[int]], **options: Any) -> Any:
        del contexts
        return self.call(*options.get("args", ()), **options.get("kwargs", {}))


def refusals(method: str, request: RequestContext, pm: SpecplugPluginManager | None = None) -> list[str]:
    """Every reason a plugin gives why `method` cannot serve `request` (empty: it can)."""
    pm = pm or _shared_pm()
    found = pm.hook.specplug_refuse_request(method=method, request=request)
    return [reason for reasons in found if reasons for reason in reasons]


def refusal_message(method: str, request: RequestContext, pm: SpecplugPluginManager | None = None) -> str | None:
    """One line for the engine's validation error (HTTP 400), or None when `method` can serve `request`."""
    pm = pm or _shared_pm()
    reasons = refusals(method, request, pm)
    if not reasons:
        return None
    display = next((m.display for m in pm.methods() if m.name == method and m.display), method)
    return f"{method}: this request cannot be served with {display}: " + "; ".join(reasons)


def _shared_pm() -> SpecplugPluginManager:
    from specplug.core.plugin_manager import get_plugin_manager

    return get_plugin_manager()
