"""CSD's hook implementations: what any host (vLLM, SGLang, the reference runner) gets when a user selects
"csd" or "csd_tree".

- memory: the namespaced correction-memory bank (`memory_path` loaded and checked at startup);
- verifier: the calibrated chain or tree rule, reading the session's memory and never writing it;
- online learning: `specplug_on_step` adds the step's judged mismatches (`outcome.extra["mismatches"]`, [M, 2]
  (draft, target) pairs, with their rows in `extra["mismatch_rows"]`) to the memory of each row's tenant
  (`core.csd.tenants`: the request starts and finishes announced tell which request is whose), so every engine
  learns the same way; hosts never announce warm-up steps;
- persistence: the memory is saved every `save_interval_s` from the step announcements (in the background) and
  at the orderly close of the session (`core.persist.PeriodicSaver`);
- admission: greedy requests only, no logprobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from specplug.core.csd.config import CSDConfig
from specplug.core.hookspecs import hookimpl
from specplug.core.host import draft_budget
from specplug.core.persist import PeriodicSaver
from specplug.core.types import MethodInfo, PluginInfo

if TYPE_CHECKING:
    from specplug.core.csd.bank import CorrectionMemoryBank
    from specplug.core.csd.tenants import TenantMemories
    from specplug.core.host import MethodSession
    from specplug.core.types import RequestContext, StepOutcome, Verifier

METHODS = ("csd", "csd_tree")
MEMORY_KINDS = (*METHODS, "correction")


@hookimpl
def specplug_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="csd",
        engine=None,
        methods=(
            MethodInfo("csd", "verifier", "available", "CSD calibrated greedy chain verification (lossy)", "CSD"),
            MethodInfo("csd_tree", "verifier", "available", "CSD calibrated greedy token-tree verification", "CSD"),
            MethodInfo("correction", "memory", "available", "CSD's online correction memory (namespaced file)"),
        ),
        summary="CSD: calibrated acceptance with an online correction memory (core.csd)",
    )


def session_config(config: Mapping[str, Any], session: MethodSession | None) -> CSDConfig:
    """The validated settings; a host's γ (`facts["num_speculative_tokens"]`) must agree with a given `gamma`."""
    return CSDConfig.from_mapping(draft_budget(config, session, "gamma", "csd"))


def load_bank(config: CSDConfig) -> CorrectionMemoryBank:
    """The memory a session starts with; a bad file stops startup naming the setting and the reason."""
    from specplug.core.csd.bank import CorrectionMemoryBank
    from specplug.core.csd.config import load_memory_file

    if config.memory_path is None:
        return CorrectionMemoryBank(config.max_pairs)
    bank = load_memory_file(config.memory_path, config.max_pairs, config.max_file_mib, config.memory_optional)
    return bank if bank is not None else CorrectionMemoryBank(config.max_pairs)


@hookimpl
def specplug_make_memory(kind: str, config: Mapping[str, Any], session: MethodSession | None) -> Any | None:
    if kind not in MEMORY_KINDS:
        return None
    return load_bank(session_config(config, session))


@hookimpl
def specplug_make_verifier(method: str, config: Mapping[str, Any], session: MethodSession | None) -> Verifier | None:
    if method not in METHODS:
        return None
    from specplug.core.csd.tenants import TenantMemories
    from specplug.core.csd.verifier import CalibratedChainVerifier, CalibratedTreeVerifier

    cfg = session_config(config, session)
    bank = session.memory if session is not None and session.memory is not None else load_bank(cfg)
    kind = CalibratedChainVerifier if method == "csd" else CalibratedTreeVerifier
    # Inside a host the memory learns from the step announcements (specplug_on_step below), not in the verifier.
    verifier = kind(bank.memory(cfg.namespace), cfg, update_memory=cfg.online and session is None)
    verifier.bank = bank
    if session is not None:
        verifier.tenants = TenantMemories(bank, cfg)
        verifier.tenants.load_tenants()
        session.data["csd_tenants"] = verifier.tenants
        session.data["csd"] = PeriodicSaver(
            lambda path: bank_of(session).save(path), cfg.save_path, cfg.save_interval_s, "CSD"
        )
    return verifier


def bank_of(session: MethodSession) -> CorrectionMemoryBank:
    """The session's bank now (an RPC may have swapped in another file's)."""
    return session.memory


@hookimpl
def specplug_refuse_request(method: str, request: RequestContext) -> list[str] | None:
    if method not in METHODS:
        return None
    sampling = request.sampling
    reasons: list[str] = []
    temperature = sampling.get("temperature", 0.0) or 0.0
    if temperature > 0:
        reasons.append(f"temperature={temperature} (CSD verifies greedy decoding; send temperature=0)")
    if sampling.get("logprobs") is not None:
        reasons.append("logprobs (rescued tokens are not the target's own choice; their logprobs would mislead)")
    return reasons


def _tenants(session: MethodSession | None) -> TenantMemories | None:
    if session is None or session.method not in METHODS:
        return None
    return getattr(session.verifier, "tenants", None)


@hookimpl
def specplug_on_request_start(request: RequestContext, session: MethodSession | None) -> None:
    tenants = _tenants(session)
    if tenants is not None:
        tenants.start(request.request_id, request.tenant)


@hookimpl
def specplug_on_request_finish(request_id: str, session: MethodSession | None) -> None:
    tenants = _tenants(session)
    if tenants is not None:
        tenants.finish(request_id)


@hookimpl
def specplug_on_step(outcome: StepOutcome, session: MethodSession | None) -> None:
    tenants = _tenants(session)
    saver: PeriodicSaver | None = session.data.get("csd") if tenants is not None else None
    if saver is None:
        return
    pairs = outcome.extra.get("mismatches")
    if session.verifier.config.online and pairs is not None and pairs.numel():
        tenants.observe(outcome.request_ids, pairs, outcome.extra.get("mismatch_rows"))
    saver.maybe_save()


@hookimpl
def specplug_on_session_close(session: MethodSession) -> None:
    saver: PeriodicSaver | None = session.data.get("csd") if session.method in METHODS else None
    if saver is not None:
        saver.close()
