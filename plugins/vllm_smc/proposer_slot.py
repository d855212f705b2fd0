"""Any specplug proposer in vLLM's drafter slot: a `custom_class` proposer that asks the session's proposer.

Selected with vLLM's own flags (vLLM infers `method: "custom_class"` from the dotted path):

    --speculative-config '{"model": "specplug.Proposer", "num_speculative_tokens": 8}'
    --additional-config '{"specplug": {"method": "toolspec", ...}}'

`specplug.ToolSpec` (the documented ToolSpec path) is the same slot with the method defaulting to "toolspec".
vLLM's custom proposer call has no request ids and vLLM reorders batch rows between steps, so the runner patch
binds this slot to its runner and session: rows are named by `runner.input_batch.req_ids`, requests are started
and finished through the session's hooks (by the runner patch), and each call announces the previous step's
outcome for the rows it drafted (vLLM verified them with its own rule: `sampled_token_ids` are what it kept).
A proposer error costs the failing request its drafts, never the server: it is logged once and counted.

Structured outputs (`SamplingParams.structured_outputs`: a JSON schema, which is also what the OpenAI server makes
of `tool_choice` "required" or a named function, or `json_object`): vLLM masks the target's logits with the
request's grammar at every draft position and the bonus one, and cuts each draft at its first grammar-illegal
token before verifying it, so drafting stays lossless. The constraint reaches the method with the request's
sampling settings (`RequestContext.sampling`); ToolSpec drafts what its schema forces
(`core.toolspec.grammar.drafting_tools`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from specplug.core.host import MethodSession
from specplug.core.types import StepOutcome

log = logging.getLogger("specplug")


class SpecplugProposer:
    """vLLM `custom_class` proposer; `host.attach` binds it to its runner and session right after startup."""

    default_method: str | None = None  # aliases fix a method when `additional_config` names none

    def __init__(self, vllm_config: Any) -> None:
        self.vllm_config = vllm_config
        self.max_model_len = vllm_config.model_config.max_model_len
        self.runner: Any = None
        self.session: MethodSession | None = None
        self.failed_requests: set[str] = set()
        self.steps = 0
        self._last: dict[str, int] = {}  # request id -> draft tokens proposed at the previous step

    def bind(self, runner: Any, session: MethodSession) -> None:
        self.runner, self.session = runner, session

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to load here: a proposer that needs a model loads it when its session builds it."""

    def propose(
        self,
        sampled_token_ids: Sequence[Sequence[int]],
        num_tokens_no_spec: Any,
        token_ids_cpu: Any,
        slot_mappings: Any = None,
    ) -> list[list[int]]:
        if self.session is None or self.runner is None:
            raise RuntimeError("specplug: the proposer slot was not bound to its runner (the runner patch is missing)")
        self.steps += 1
        req_ids = self.runner.input_batch.req_ids
        self._announce_last_step(sampled_token_ids, req_ids)
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        rows, contexts, ids, budgets = [], [], [], []
        k = self.session.facts.get("num_speculative_tokens") or 0
        # A proposer that takes numpy rows gets views of vLLM's token buffer (valid during this call only) instead
        # of a list copy of every context at every step (~60 us for 3k tokens).
        views = getattr(self.session.proposer, "accepts_arrays", False)
        for row, sampled in enumerate(sampled_token_ids):
            rid = req_ids[row] if row < len(req_ids) else None
            length = int(num_tokens_no_spec[row])
            budget = min(k, self.max_model_len - length)
            if not sampled or rid is None or budget <= 0 or rid in self.failed_requests:
                continue  # partial prefill, no request, no room, or a request whose drafting failed
            rows.append(row)
            contexts.append(token_ids_cpu[row, :length] if views else token_ids_cpu[row, :length].tolist())
            ids.append(rid)
            budgets.append(budget)
        if rows:
            for row, chain in zip(rows, self._draft(contexts, ids, budgets), strict=True):
                drafts[row] = chain
        self._last = {ids[i]: len(drafts[row]) for i, row in enumerate(rows) if drafts[row]}
        return drafts

    def _draft(self, contexts: list[list[int]], ids: list[str], budgets: list[int]) -> list[list[int]]:
        assert self.session is not None
        try:
            return _chains(self.session.propose(contexts, request_ids=ids, budgets=budgets))
        except Exception:  # find the failing request(s) row by row; the others keep their drafts
            chains = []
            for context, rid, budget in zip(contexts, ids, budgets, strict=True):
                try:
                    chains.extend(_chains(self.session.propose([context], request_ids=[rid], budgets=[budget])))
                except Exception as exc:
                    self.failed_requests.add(rid)
                    log.warning("specplug: drafting failed for request %s, decoding it without drafts: %s", rid, exc)
                    chains.append([])
            return chains

    def _announce_last_step(self, sampled_token_ids: Sequence[Sequence[int]], req_ids: Sequence[str]) -> None:
        """vLLM verified last step's drafts with its own rule; `sampled_token_ids[row]` is what it committed."""
        if not self._last:
            return
        ids, proposed, accepted = [], [], []
        for row, sampled in enumerate(sampled_token_ids):
            rid = req_ids[row] if row < len(req_ids) else None
            if rid in self._last:
                ids.append(rid)
                proposed.append(self._last[rid])
                accepted.append(max(len(sampled) - 1, 0))
        if ids:
            self.session.step(
                StepOutcome(
                    request_ids=ids,
                    num_proposed=torch.tensor(proposed, dtype=torch.int64),
                    num_accepted=torch.tensor(accepted, dtype=torch.int64),
                )
            )

    def forget(self, request_ids: Sequence[str]) -> None:
        """Requests vLLM dropped (the runner patch calls this as it announces their finish)."""
        for rid in request_ids:
            self.failed_requests.discard(rid)
            self._last.pop(rid, None)


class ToolSpecProposer(SpecplugProposer):
    """`specplug.ToolSpec`: the documented ToolSpec class path, the generic slot with "toolspec" as default."""

    default_method = "toolspec"


def _chains(draft: Any) -> list[list[int]]:
    counts = draft.num_tokens.tolist()
    return [row[:n] for row, n in zip(draft.tokens.tolist(), counts, strict=True)]
