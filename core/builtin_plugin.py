"""The core's own plugin: it answers the wrapped-call hooks, so timing wrappers have something to wrap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from specplug.core.hookspecs import hookimpl
from specplug.core.types import PluginInfo

if TYPE_CHECKING:
    import torch

    from specplug.core.types import DraftBatch, Proposer, Verifier, VerifyResult


@hookimpl
def specplug_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="core",
        engine=None,
        methods=(),
        summary="engine-free algorithms and the call hooks (specplug_propose / specplug_verify)",
    )


@hookimpl(trylast=True)
def specplug_propose(proposer: Proposer, contexts: Sequence[Sequence[int]], options: Mapping[str, Any]) -> DraftBatch:
    return proposer.propose(contexts, **options)


@hookimpl(trylast=True)
def specplug_verify(
    verifier: Verifier, draft: DraftBatch, target_logits: torch.Tensor, options: Mapping[str, Any]
) -> VerifyResult:
    return verifier.verify(draft, target_logits, **options)
