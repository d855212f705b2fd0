"""The one seam between algorithms and engines: every specplug hook is declared here.

Hooks are called with keyword arguments only, so a spec can gain an argument later without breaking existing
implementations (pluggy passes each implementation just the arguments it names).

Engine adapters are hosts (`specplug.core.host.MethodSession`): each engine instance opens one session for the
method its flags select; the session asks the selectors for that method's memory, proposer and verifier, and
announces request start, every verify step and request finish through the observers. Every hook that concerns an
engine instance receives that `session` (method name, settings, engine facts, what was built), so one process can
host several engines and a plugin acts only for the methods it owns.

Four kinds of hooks:
- selectors (`firstresult=True`): build a proposer, verifier or memory for a method name and config; the first
  plugin that knows the method answers, the others return None.
- observers (fan-out): hear about request start, every step outcome and request finish — metrics, online memory
  updates and tracing hang here.
- admission: `specplug_refuse_request` lists why a method cannot serve a request (the host turns it into the
  engine's own validation error, HTTP 400 on a server).
- call hooks wrapped for timing: engines and the reference runner call `specplug_propose` / `specplug_verify`
  instead of the objects directly, so `@hookimpl(wrapper=True)` plugins can time or trace them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch

    from specplug.core.host import MethodSession
    from specplug.core.types import (
        DraftBatch,
        PluginInfo,
        Proposer,
        RequestContext,
        StepOutcome,
        Verifier,
        VerifyResult,
    )

PROJECT = "specplug"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- description -------------------------------------------------------------------------------------------


@hookspec
def specplug_plugin_info() -> PluginInfo:
    """Describe this plugin: the engine it joins and the methods it provides (shown by `specplug doctor`)."""


# --- selectors ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def specplug_make_proposer(method: str, config: Mapping[str, Any], session: MethodSession | None) -> Proposer | None:
    """Build the proposer for `method`, or return None when this plugin does not provide it (the engine's own
    drafter then drafts).

    Must validate `config` and raise `specplug.core.errors.ConfigError` naming the bad setting, so a wrong value
    fails when the engine starts rather than mid-serving. `session` (None outside a host) carries the engine's
    facts (`session.facts`: tokenizer, num_speculative_tokens, ...) and the memory built before.
    """


@hookspec(firstresult=True)
def specplug_make_verifier(method: str, config: Mapping[str, Any], session: MethodSession | None) -> Verifier | None:
    """Build the verifier for `method`, or return None (the engine's own acceptance rule then verifies). Same
    validation duty as `specplug_make_proposer`."""


@hookspec(firstresult=True)
def specplug_make_memory(kind: str, config: Mapping[str, Any], session: MethodSession | None) -> Any | None:
    """Build (or load) a persistent memory, or return None. A host asks with `kind` = its method's name first, so
    the proposer and verifier built next can share it (`session.memory`)."""


# --- admission ---------------------------------------------------------------------------------------------


@hookspec
def specplug_refuse_request(method: str, request: RequestContext) -> list[str] | None:
    """Reasons (human-readable) why `method` cannot serve `request`; empty or None when it can.

    `request.sampling` holds the engine-neutral sampling settings (temperature, top_p, logprobs, n, ...). Runs in
    the engine's front end, before the request reaches a worker, so it gets no session.
    """


# --- observers ---------------------------------------------------------------------------------------------


@hookspec
def specplug_on_request_start(request: RequestContext, session: MethodSession | None) -> None:
    """A request entered decoding."""


@hookspec
def specplug_on_step(outcome: StepOutcome, session: MethodSession | None) -> None:
    """One verify step finished for a batch: proposed/accepted (and, where the method has them, rescued, ESS,
    resampled) per row. Method-specific data rides in `outcome.extra` (CSD: the judged mismatch pairs it learns
    from). Hosts never announce warm-up steps."""


@hookspec
def specplug_on_request_finish(
    request_id: str,
    num_output_tokens: int,
    finish_reason: str,
    session: MethodSession | None,
    output_token_ids: Sequence[int] | None,
) -> None:
    """A request left decoding (finished, aborted or failed). Per-request state must be released here;
    `output_token_ids` is what the host committed for it, when the host knows."""


@hookspec
def specplug_on_session_close(session: MethodSession) -> None:
    """The engine instance is shutting down in order: persist what must survive (memories)."""


# --- wrapped calls -----------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def specplug_propose(
    proposer: Proposer, contexts: Sequence[Sequence[int]], options: Mapping[str, Any]
) -> DraftBatch | None:
    """Run `proposer.propose`. The core answers it; wrappers (`wrapper=True`) time or trace around it."""


@hookspec(firstresult=True)
def specplug_verify(
    verifier: Verifier, draft: DraftBatch, target_logits: torch.Tensor, options: Mapping[str, Any]
) -> VerifyResult | None:
    """Run `verifier.verify`. The core answers it; wrappers (`wrapper=True`) time or trace around it."""
