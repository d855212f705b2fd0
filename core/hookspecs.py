"""The one seam between algorithms and engines: every specplug hook is declared here.

Hooks are called with keyword arguments only, so a spec can gain an argument later without breaking existing
implementations (pluggy passes each implementation just the arguments it names).

Three kinds of hooks:
- selectors (`firstresult=True`): build a proposer, verifier or memory for a method name and config; the first
  plugin that knows the method answers, the others return None.
- observers (fan-out): hear about request start, every step outcome and request finish — metrics, online memory
  updates and tracing hang here.
- call hooks wrapped for timing: engines and the reference runner call `specplug_propose` / `specplug_verify`
  instead of the objects directly, so `@hookimpl(wrapper=True)` plugins can time or trace them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch

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
def specplug_make_proposer(method: str, config: Mapping[str, Any]) -> Proposer | None:
    """Build the proposer for `method`, or return None when this plugin does not provide it.

    Must validate `config` and raise `specplug.core.errors.ConfigError` naming the bad setting, so a wrong value
    fails when the engine starts rather than mid-serving.
    """


@hookspec(firstresult=True)
def specplug_make_verifier(method: str, config: Mapping[str, Any]) -> Verifier | None:
    """Build the verifier for `method`, or return None. Same validation duty as `specplug_make_proposer`."""


@hookspec(firstresult=True)
def specplug_make_memory(kind: str, config: Mapping[str, Any]) -> Any | None:
    """Build (or load) a persistent memory such as CSD's correction memory, or return None."""


# --- observers ---------------------------------------------------------------------------------------------


@hookspec
def specplug_on_request_start(request: RequestContext) -> None:
    """A request entered decoding."""


@hookspec
def specplug_on_step(outcome: StepOutcome) -> None:
    """One verify step finished for a batch: proposed/accepted (and, where the method has them, rescued, ESS,
    resampled) per row."""


@hookspec
def specplug_on_request_finish(request_id: str, num_output_tokens: int, finish_reason: str) -> None:
    """A request left decoding (finished, aborted or failed). Per-request state must be released here."""


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
