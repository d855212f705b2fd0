"""ToolSpec's vLLM arm: the core drafter as a vLLM `custom_class` proposer (chains; vLLM verifies one chain).

Selected with vLLM's own flags:

    --speculative-config '{"model": "specplug.ToolSpec", "num_speculative_tokens": 8}'
    --additional-config '{"specplug": {"method": "toolspec", "tool_format": "hermes", "memory_path": "m.json"}}'

(`specplug.ToolSpec` is this class; vLLM infers `method: "custom_class"` from the dotted path; the
`additional_config` part is optional.) A request's tools and tenant come from `SamplingParams.extra_args
{"toolspec": {"tools": [...], "tenant": "..."}}`; specplug's bootstrap fills them in for the OpenAI server from
the chat request's `tools` and `user` fields. Without tools the drafter still forces the call structure.

vLLM's custom proposer call has no request ids, and vLLM reorders batch rows between steps, so the runner patch
(`runner_hooks`) hands this proposer its runner: state is keyed by `runner.input_batch.req_ids[row]`, and a
request that left `runner.requests` is finished (its answer joins its tenant's memory). Token recycling learns
from committed tokens only (the custom proposer sees no logits; under greedy decoding they are the target's
arg-max, the top-1 a chain follows). A drafter error on one request costs that request its drafts, never the
server: it is logged once and counted.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Sequence
from typing import Any

from specplug.core.toolspec.config import METHOD, ToolSpecConfig

log = logging.getLogger("specplug")
EXTRA_ARGS_KEY = "toolspec"


def toolspec_config_from_vllm(vllm_config: Any) -> ToolSpecConfig:
    """The validated ToolSpec settings: `additional_config.specplug` (if it names toolspec) + vLLM's k."""
    from specplug.plugins.vllm_smc.settings import method_settings, selected_method

    given = method_settings(vllm_config, METHOD) if selected_method(vllm_config) == METHOD else {}
    k = vllm_config.speculative_config.num_speculative_tokens
    if "num_speculative_tokens" in given and given["num_speculative_tokens"] != k:
        from specplug.core.errors import ConfigError

        allowed = f"omitted, or equal to speculative_config.num_speculative_tokens ({k})"
        raise ConfigError("num_speculative_tokens", given["num_speculative_tokens"], allowed, method=METHOD)
    return ToolSpecConfig.from_mapping({**given, "num_speculative_tokens": k})


def with_request_tools(params: Any, tools: Sequence[Any], user: str | None) -> None:
    """Put an OpenAI chat request's tools (and its `user` as tenant) into `params.extra_args["toolspec"]`."""
    extra = dict(params.extra_args or {})
    if EXTRA_ARGS_KEY in extra:  # the client said it explicitly (vllm_xargs)
        return
    dumped = [t.model_dump(exclude_none=True) if hasattr(t, "model_dump") else dict(t) for t in tools]
    extra[EXTRA_ARGS_KEY] = {"tools": dumped, "tenant": user or "default"}
    params.extra_args = extra


class ToolSpecProposer:
    """vLLM `custom_class` proposer; `runner_hooks` calls `bind_runner` right after the runner is built."""

    def __init__(self, vllm_config: Any) -> None:
        from transformers import AutoTokenizer

        from specplug.core.proposers.toolspec import ToolSpecDrafter

        self.config = toolspec_config_from_vllm(vllm_config)
        model_config = vllm_config.model_config
        tokenizer = AutoTokenizer.from_pretrained(
            model_config.tokenizer, trust_remote_code=model_config.trust_remote_code
        )
        self.drafter = ToolSpecDrafter(self.config, tokenizer)  # a bad memory_path stops startup here
        self.max_model_len = model_config.max_model_len
        self.runner: Any = None
        self.failed_requests: set[str] = set()
        self.steps = 0
        if self.config.save_path:
            atexit.register(self.save_quietly, self.config.save_path)

    def bind_runner(self, runner: Any) -> None:
        self.runner = runner

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to load: ToolSpec drafts without a model."""

    def propose(
        self,
        sampled_token_ids: Sequence[Sequence[int]],
        num_tokens_no_spec: Any,
        token_ids_cpu: Any,
        slot_mappings: Any = None,
    ) -> list[list[int]]:
        if self.runner is None:
            raise RuntimeError("specplug: ToolSpecProposer was not bound to its runner (the runner patch is missing)")
        self.steps += 1
        self.sync()
        req_ids = self.runner.input_batch.req_ids
        drafts: list[list[int]] = []
        for row, sampled in enumerate(sampled_token_ids):
            rid = req_ids[row] if row < len(req_ids) else None
            length = int(num_tokens_no_spec[row])
            budget = min(self.config.num_speculative_tokens, self.max_model_len - length)
            if not sampled or rid is None or budget <= 0 or rid in self.failed_requests:
                drafts.append([])  # partial prefill, no request, no room, or a request whose drafting failed
                continue
            drafts.append(self._draft(rid, token_ids_cpu[row, :length].tolist(), budget))
        return drafts

    def _draft(self, rid: str, context: list[int], budget: int) -> list[int]:
        try:
            if not self.drafter.has_request(rid):
                state = self.runner.requests[rid]
                extra = (getattr(state.sampling_params, "extra_args", None) or {}).get(EXTRA_ARGS_KEY) or {}
                self.drafter.start_request(
                    rid, state.prompt_token_ids, tools=extra.get("tools"), tenant=str(extra.get("tenant", "default"))
                )
            return self.drafter.draft(rid, context, budget)
        except Exception as exc:  # one request loses its drafts; serving goes on (verification is unchanged)
            self.failed_requests.add(rid)
            log.warning("specplug: ToolSpec drafting failed for request %s, decoding it without drafts: %s", rid, exc)
            return []

    def sync(self) -> None:
        """Finish the requests vLLM has dropped since the last step: their answers join the memory."""
        live = self.runner.requests if self.runner is not None else {}
        for rid in self.drafter.active_requests():
            if rid not in live:
                self.drafter.finish_request(rid)
        self.failed_requests &= set(live)

    def report(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "drafted": dict(self.drafter.drafted),
            "failed_requests": len(self.failed_requests),
            "memory": self.drafter.bank.summary(),
        }

    def save_quietly(self, path: str) -> None:
        try:
            self.sync()
            self.drafter.save(path)
        except Exception as exc:  # at exit: say so, never raise
            log.warning("specplug: could not save the ToolSpec memory to %s: %s", path, exc)


def toolspec_rpc(worker: Any, action: str, path: str | None = None) -> dict[str, Any] | None:
    """Run on each vLLM worker via `LLM.collective_rpc`: "report" the counters, "save" the memory to `path`, or
    "reset" it to the memory the engine started with (benchmarks do this after warm-up).

    Returns None on a worker whose runner has no ToolSpec proposer.
    """
    runner = getattr(worker, "model_runner", None)
    proposer = getattr(runner, "drafter", None)
    if not isinstance(proposer, ToolSpecProposer):
        return None
    if action == "report":
        proposer.sync()
        return proposer.report()
    if action == "save" and path:
        proposer.sync()
        proposer.drafter.save(path)
        return {"saved": True, **proposer.report()}
    if action == "reset":
        proposer.sync()
        proposer.drafter.reset_memory()
        return proposer.report()
    raise ValueError(f"toolspec_rpc: unknown action {action!r} (report, save PATH, reset)")
