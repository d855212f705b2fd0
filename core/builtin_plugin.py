"""The core's own plugin: the standard proposers and verifiers every method is compared against, and the
default answers to the wrapped-call hooks (so timing wrappers have something to wrap). Each specplug method
(`core.smc`, `core.csd`, `core.toolspec`) has its own plugin module beside its code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from specplug.core.config import settings
from specplug.core.hookspecs import hookimpl
from specplug.core.types import MethodInfo, PluginInfo

if TYPE_CHECKING:
    import torch

    from specplug.core.types import DraftBatch, Proposer, Verifier, VerifyResult


@hookimpl
def specplug_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="core",
        engine=None,
        methods=(
            MethodInfo("ngram", "proposer", "available", "prompt-lookup n-gram drafts"),
            MethodInfo("draft_model", "proposer", "available", "a smaller causal LM drafts k tokens with log q"),
            MethodInfo("greedy", "verifier", "available", "greedy chain verification (lossless under greedy)"),
            MethodInfo("greedy_tree", "verifier", "available", "greedy token-tree verification"),
            MethodInfo("rejection", "verifier", "available", "standard speculative rejection sampling"),
        ),
        summary="standard proposers and verifiers, and the call hooks (specplug_propose / specplug_verify)",
    )


@hookimpl
def specplug_make_proposer(method: str, config: Mapping[str, Any]) -> Proposer | None:
    if method == "ngram":
        from specplug.core.proposers.ngram import NgramProposer

        cfg = settings(method, config, {"num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4})
        return NgramProposer(**cfg)
    if method == "draft_model":
        from specplug.core.proposers.draft_model import DraftModelProposer
        from specplug.reference.models import load_causal_lm

        cfg = settings(
            method, config, {"model": None, "num_layers": None, "num_speculative_tokens": 4, "temperature": 0.0}
        )
        if cfg["model"] is None:
            from specplug.core.errors import ConfigError

            raise ConfigError("model", None, "a model asset name or a local checkpoint directory", method=method)
        from specplug.assets import resolve_model

        model = load_causal_lm(resolve_model(cfg["model"]), num_layers=cfg["num_layers"])
        return DraftModelProposer(model, cfg["num_speculative_tokens"], cfg["temperature"])
    return None


@hookimpl
def specplug_make_verifier(method: str, config: Mapping[str, Any]) -> Verifier | None:
    if method == "greedy":
        from specplug.core.verifiers.greedy_chain import GreedyChainVerifier

        settings(method, config, {})
        return GreedyChainVerifier()
    if method == "greedy_tree":
        from specplug.core.verifiers.greedy_tree import GreedyTreeVerifier

        settings(method, config, {})
        return GreedyTreeVerifier()
    if method == "rejection":
        from specplug.core.verifiers.rejection import RejectionSamplingVerifier

        return RejectionSamplingVerifier(**settings(method, config, {"temperature": 1.0}))
    return None


@hookimpl(trylast=True)
def specplug_propose(proposer: Proposer, contexts: Sequence[Sequence[int]], options: Mapping[str, Any]) -> DraftBatch:
    return proposer.propose(contexts, **options)


@hookimpl(trylast=True)
def specplug_verify(
    verifier: Verifier, draft: DraftBatch, target_logits: torch.Tensor, options: Mapping[str, Any]
) -> VerifyResult:
    return verifier.verify(draft, target_logits, **options)
