"""The core's own plugin: the standard proposers and verifiers every method is compared against, and the
default answers to the wrapped-call hooks (so timing wrappers have something to wrap)."""

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
            MethodInfo(
                "smc", "method", "available", "SMC-SD core (core.smc) on the reference runner; engines: see plugins"
            ),
            MethodInfo("csd", "verifier", "available", "CSD calibrated greedy chain verification (lossy)"),
            MethodInfo("csd_tree", "verifier", "available", "CSD calibrated greedy token-tree verification"),
            MethodInfo("correction", "memory", "available", "CSD's online correction memory (namespaced file)"),
            MethodInfo("toolspec", "proposer", "available", "ToolSpec: schema-forced, retrieved and recycled drafts"),
            MethodInfo("invocation", "memory", "available", "ToolSpec's per-tenant retrieval memory of answers"),
        ),
        summary="engine-free algorithms and the call hooks (specplug_propose / specplug_verify)",
    )


@hookimpl
def specplug_make_proposer(method: str, config: Mapping[str, Any]) -> Proposer | None:
    if method == "ngram":
        from specplug.core.proposers.ngram import NgramProposer

        cfg = settings(method, config, {"num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4})
        return NgramProposer(**cfg)
    if method == "draft_model":
        from specplug.core.proposers.draft_model import DraftModelProposer
        from specplug.core.reference.models import load_causal_lm

        cfg = settings(
            method, config, {"model": None, "num_layers": None, "num_speculative_tokens": 4, "temperature": 0.0}
        )
        if cfg["model"] is None:
            from specplug.core.errors import ConfigError

            raise ConfigError("model", None, "a model asset name or a local checkpoint directory", method=method)
        from specplug.core.assets import resolve_model

        model = load_causal_lm(resolve_model(cfg["model"]), num_layers=cfg["num_layers"])
        return DraftModelProposer(model, cfg["num_speculative_tokens"], cfg["temperature"])
    if method == "toolspec":  # config: ToolSpecConfig keys plus "tokenizer" (the target's, an object or a path)
        from specplug.core.proposers.toolspec import ToolSpecDrafter
        from specplug.core.toolspec.config import ToolSpecConfig

        given = dict(config)
        tokenizer = given.pop("tokenizer", None)
        if tokenizer is None:
            from specplug.core.errors import ConfigError

            raise ConfigError("tokenizer", None, "the target's tokenizer (object or directory)", method=method)
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        return ToolSpecDrafter(ToolSpecConfig.from_mapping(given), tokenizer)
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
    if method in {"csd", "csd_tree"}:
        from specplug.core.csd.config import CSDConfig
        from specplug.core.verifiers.calibrated import CalibratedChainVerifier, CalibratedTreeVerifier

        cfg = CSDConfig.from_mapping(config)
        bank = _correction_bank(cfg)
        kind = CalibratedChainVerifier if method == "csd" else CalibratedTreeVerifier
        return kind(bank.memory(cfg.namespace), cfg, update_memory=cfg.online)
    return None


def _correction_bank(cfg: Any) -> Any:
    from specplug.core.memory.correction_bank import CorrectionMemoryBank

    if cfg.memory_path is None:
        return CorrectionMemoryBank(cfg.max_pairs)
    return CorrectionMemoryBank.load(cfg.memory_path, cfg.max_pairs)


@hookimpl
def specplug_make_memory(kind: str, config: Mapping[str, Any]) -> Any | None:
    if kind == "correction":
        from specplug.core.csd.config import CSDConfig

        return _correction_bank(CSDConfig.from_mapping(config))
    if kind == "invocation":
        from specplug.core.proposers.toolspec import load_bank
        from specplug.core.toolspec.config import ToolSpecConfig

        return load_bank(ToolSpecConfig.from_mapping(config))
    return None


@hookimpl(trylast=True)
def specplug_propose(proposer: Proposer, contexts: Sequence[Sequence[int]], options: Mapping[str, Any]) -> DraftBatch:
    return proposer.propose(contexts, **options)


@hookimpl(trylast=True)
def specplug_verify(
    verifier: Verifier, draft: DraftBatch, target_logits: torch.Tensor, options: Mapping[str, Any]
) -> VerifyResult:
    return verifier.verify(draft, target_logits, **options)
