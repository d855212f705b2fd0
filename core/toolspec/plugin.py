"""ToolSpec's hook implementations: what any host gets when a user selects "toolspec".

- memory: the per-tenant invocation (retrieval) memory, `memory_path` loaded and checked at startup;
- proposer: the drafter, sharing that memory; the host's tokenizer and draft budget come from `session.facts`;
- request start: the request's tools (schema) and tenant reach the drafter (`RequestContext.tools/tenant`);
- request finish: the answer joins its tenant's memory (the online learning of ToolSpec);
- step: hosts that score drafts (the reference runner) pass `extra["scored"]` = (inputs, target logits, valid)
  and token recycling learns the target's top candidates from them, each row into its own request's table (its
  tenant's, or the request's own: tenants never learn from each other's text);
- persistence: the memory is written to `save_path` every `save_interval_s` (in the background, from the step
  announcements) and at the orderly close (`core.persist.PeriodicSaver`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from specplug.core.errors import ConfigError
from specplug.core.hookspecs import hookimpl
from specplug.core.host import draft_budget
from specplug.core.persist import PeriodicSaver
from specplug.core.toolspec.config import METHOD, ToolSpecConfig
from specplug.core.types import MethodInfo, PluginInfo

if TYPE_CHECKING:
    from specplug.core.host import MethodSession
    from specplug.core.types import Proposer, RequestContext, StepOutcome

MEMORY_KINDS = (METHOD, "invocation")


@hookimpl
def specplug_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="toolspec",
        engine=None,
        methods=(
            MethodInfo(
                "toolspec",
                "proposer",
                "available",
                "ToolSpec: schema-forced, retrieved and recycled drafts",
                "ToolSpec",
                reads_request_tools=True,
            ),
            MethodInfo("invocation", "memory", "available", "ToolSpec's per-tenant retrieval memory of answers"),
        ),
        summary="ToolSpec: schema-aware, retrieval-based drafting for tool calls (core.toolspec)",
    )


def session_config(config: Mapping[str, Any], session: MethodSession | None) -> ToolSpecConfig:
    """The validated settings; a host's draft budget (`facts["num_speculative_tokens"]`) must agree."""
    given = {key: value for key, value in config.items() if key != "tokenizer"}
    return ToolSpecConfig.from_mapping(draft_budget(given, session, "num_speculative_tokens", METHOD))


@hookimpl
def specplug_make_memory(kind: str, config: Mapping[str, Any], session: MethodSession | None) -> Any | None:
    if kind not in MEMORY_KINDS:
        return None
    from specplug.core.toolspec.drafter import load_bank

    return load_bank(session_config(config, session))


@hookimpl
def specplug_make_proposer(method: str, config: Mapping[str, Any], session: MethodSession | None) -> Proposer | None:
    """config: ToolSpecConfig keys plus, outside a host, "tokenizer" (the target's, an object or a path)."""
    if method != METHOD:
        return None
    from specplug.core.toolspec.drafter import ToolSpecDrafter

    tokenizer = config.get("tokenizer")
    if tokenizer is None and session is not None:
        tokenizer = session.facts.get("tokenizer")
    if tokenizer is None:
        raise ConfigError("tokenizer", None, "the target's tokenizer (object or directory)", method=METHOD)
    if isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    bank = session.memory if session is not None else None
    cfg = session_config(config, session)
    if session is not None:  # before the drafter, so a bad save_path is refused first; saves the drafter's memory
        save = lambda path: session.proposer.save(path)  # noqa: E731
        session.data["toolspec"] = PeriodicSaver(save, cfg.save_path, cfg.save_interval_s, "ToolSpec")
    return ToolSpecDrafter(cfg, tokenizer, bank=bank)


def _drafter(session: MethodSession | None) -> Any:
    return session.proposer if session is not None and session.method == METHOD else None


@hookimpl
def specplug_on_request_start(request: RequestContext, session: MethodSession | None) -> None:
    drafter = _drafter(session)
    if drafter is not None:
        from specplug.core.toolspec.grammar import drafting_tools

        tools = drafting_tools(request.tools, request.sampling)  # an output constraint's schema forces tokens too
        drafter.start_request(request.request_id, request.prompt_token_ids, tools=tools, tenant=request.tenant)


# Finish reasons whose (partial) answers are not remembered: the request never produced a real answer.
UNREMEMBERED = frozenset({"abort", "aborted", "cancelled", "error", "failed"})


@hookimpl
def specplug_on_request_finish(
    request_id: str, finish_reason: str, session: MethodSession | None, output_token_ids: Sequence[int] | None
) -> None:
    drafter = _drafter(session)
    if drafter is not None and drafter.has_request(request_id):
        remember = finish_reason not in UNREMEMBERED
        drafter.finish_request(request_id, remember=remember, output_ids=output_token_ids if remember else None)


@hookimpl
def specplug_on_step(outcome: StepOutcome, session: MethodSession | None) -> None:
    drafter = _drafter(session)
    if drafter is None:
        return
    scored = outcome.extra.get("scored")
    if scored is not None:
        drafter.observe_verify(*scored, request_ids=outcome.request_ids)
    saver: PeriodicSaver | None = session.data.get("toolspec")
    if saver is not None:
        saver.maybe_save()


@hookimpl
def specplug_on_session_close(session: MethodSession) -> None:
    saver: PeriodicSaver | None = session.data.get("toolspec") if _drafter(session) is not None else None
    if saver is not None:
        saver.close()
