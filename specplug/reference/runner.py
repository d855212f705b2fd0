"""Drive a (proposer, verifier) pair — or plain autoregressive decoding — on a transformers model.

Autoregressive decoding is the same loop with empty drafts: the greedy verifier then returns the arg-max and the
rejection verifier samples from the target, so both paths share every line that could make them differ.
Proposing and verifying go through the `specplug_propose` / `specplug_verify` hooks, so timing wrappers and
observers see the reference runner exactly as they would see an engine. Given a `MethodSession` (a method chosen
by name, as an engine's flags would), the runner is a host like any engine adapter: the session's proposer and
verifier run, and every request start, verify step (with the verifier's mismatches and the scored positions) and
request finish is announced through the session, so online learning happens in the method's hook
implementations exactly as on vLLM.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from specplug.core.host import MethodSession
from specplug.core.plugin_manager import SpecplugPluginManager, create_plugin_manager
from specplug.core.types import PAD_TOKEN, DraftBatch, Proposer, RequestContext, StepOutcome, Verifier
from specplug.core.verifiers.greedy_chain import GreedyChainVerifier
from specplug.core.verifiers.rejection import RejectionSamplingVerifier
from specplug.reference.slot_cache import SlotCache


@dataclass
class GenerationStats:
    """Counts that define the speculative metrics. One target forward per step (the first includes the prompt)."""

    target_forwards: int = 0  # batched forward passes
    row_forwards: int = 0  # forward passes summed over the rows they served (AR: one per output token)
    proposed: int = 0
    accepted: int = 0
    rescued: int = 0  # accepted drafts that only a relaxed rule (CSD) kept
    output_tokens: int = 0
    wall_s: float = 0.0
    accepted_per_step: list[int] = field(default_factory=list)  # one entry per (row, step) that had a draft
    proposed_per_step: list[int] = field(default_factory=list)  # aligned with accepted_per_step

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens committed per row-step: accepted drafts + 1 (vLLM's definition)."""
        steps = len(self.accepted_per_step)
        return 1.0 + self.accepted / steps if steps else 1.0

    @property
    def target_forwards_per_token(self) -> float:
        """Target forwards each sequence needed per token it produced: 1.0 for autoregressive decoding."""
        return self.row_forwards / self.output_tokens if self.output_tokens else 0.0


@dataclass
class GenerationResult:
    tokens: list[list[int]]
    stats: GenerationStats
    first_token_s: list[float]  # per row, seconds from the start of generate()
    finish_s: list[float]
    forwards: list[int]  # per row, target forwards it took part in


def _rows(values: torch.Tensor | None, active: list[bool]) -> torch.Tensor | None:
    return None if values is None else values[torch.tensor(active)]


def _scored_inputs(
    committed: list[list[int]], draft: DraftBatch, active: list[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The token before each scored position ([B, K+1]: the last committed token, then the drafts) and which
    positions were really scored (active rows, up to each row's draft length)."""
    last = torch.tensor([c[-1] for c in committed], dtype=torch.int64).unsqueeze(1)
    inputs = torch.cat([last, draft.tokens.clamp_min(0)], dim=1)
    valid = torch.arange(inputs.shape[1]).unsqueeze(0) <= draft.num_tokens.unsqueeze(1)
    return inputs, valid & torch.tensor(active).unsqueeze(1)


class ReferenceRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        *,
        eos_token_ids: Sequence[int] = (),
        plugin_manager: SpecplugPluginManager | None = None,
    ) -> None:
        self.model = model
        self.eos = set(eos_token_ids)
        self.pm = plugin_manager or create_plugin_manager(load_entry_points=False)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        proposer: Proposer | None = None,
        verifier: Verifier | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        request_ids: Sequence[str] | None = None,
        session: MethodSession | None = None,
        requests: Sequence[RequestContext] | None = None,
    ) -> GenerationResult:
        """Generate up to `max_new_tokens` per prompt. Without a proposer this is plain autoregressive decoding.

        With a `session`, its proposer and verifier are used (unless given) and `requests` (one per prompt: tools,
        tenant) are announced to it; objects handed in without a session keep their own per-batch protocol
        (`start_batch` / `observe_verify` / `finish_batch`).
        """
        pm = session.pm if session is not None else self.pm
        if session is not None:
            proposer = proposer if proposer is not None else session.proposer
            verifier = verifier if verifier is not None else session.verifier
        if verifier is None:
            verifier = GreedyChainVerifier() if temperature == 0 else RejectionSamplingVerifier(temperature)
        batch = len(prompts)
        if requests is not None:
            ids = [r.request_id for r in requests]
        else:
            ids = list(request_ids or [str(i) for i in range(batch)])
            requests = [RequestContext(rid, list(p)) for rid, p in zip(ids, prompts, strict=True)]
        generator = torch.Generator().manual_seed(seed)
        legacy = session is None and proposer is not None
        if session is not None:
            for request in requests:
                session.request_started(request)
        elif legacy and hasattr(proposer, "start_batch"):
            proposer.start_batch(batch)
        cache = SlotCache(self.model, batch)
        committed = [list(p) for p in prompts]
        outputs: list[list[int]] = [[] for _ in prompts]
        done = [max_new_tokens <= 0] * batch
        stats = GenerationStats()
        first_at, finish_at, forwards = [0.0] * batch, [0.0] * batch, [0] * batch
        start = time.perf_counter()

        while not all(done):
            active = [not d for d in done]
            remaining = [max_new_tokens - len(o) for o in outputs]
            draft = self._draft(pm, proposer, committed, active, remaining, None if legacy else ids)
            feeds = cache.sync([c if a else None for c, a in zip(committed, active, strict=True)])
            counts = draft.num_tokens.tolist()
            offsets = [len(f) - 1 for f in feeds]
            for row in range(batch):
                feeds[row] = feeds[row] + draft.tokens[row, : counts[row]].tolist() if active[row] else []
            logits = cache.extend(feeds)
            stats.target_forwards += 1
            stats.row_forwards += sum(active)
            index = (torch.tensor(offsets).clamp_min(0).unsqueeze(1) + torch.arange(draft.max_tokens + 1)).clamp_max(
                logits.shape[1] - 1
            )
            target_logits = logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
            options = {"generator": generator, "request_ids": ids}
            result = pm.hook.specplug_verify(
                verifier=verifier, draft=draft, target_logits=target_logits, options=options
            )
            inputs, valid = _scored_inputs(committed, draft, active)
            if legacy and hasattr(proposer, "observe_verify"):  # drafters that learn from scores
                proposer.observe_verify(inputs, target_logits, valid)
            self._commit(result, draft, active, committed, outputs, done, max_new_tokens, stats)
            now = time.perf_counter() - start
            for row, was_active in enumerate(active):
                if was_active:
                    forwards[row] += 1
                    first_at[row] = first_at[row] or now
                    finish_at[row] = now
            extra: dict = {"scored": (inputs, target_logits, valid)}
            if getattr(result, "mismatches", None) is not None:
                extra["mismatches"] = result.mismatches
            if getattr(result, "mismatch_rows", None) is not None:  # rows of the batch → rows of the announcement
                extra["mismatch_rows"] = (torch.cumsum(torch.tensor(active), 0) - 1)[result.mismatch_rows]
            pm.hook.specplug_on_step(
                outcome=StepOutcome(
                    request_ids=[i for i, a in zip(ids, active, strict=True) if a],
                    num_proposed=draft.num_tokens[torch.tensor(active)],
                    num_accepted=result.num_accepted[torch.tensor(active)],
                    num_rescued=_rows(getattr(result, "num_rescued", None), active),
                    extra=extra,
                ),
                session=session,
            )
        stats.wall_s = time.perf_counter() - start
        if session is not None:
            for rid, output in zip(ids, outputs, strict=True):
                session.request_finished(rid, len(output), "stop", output_token_ids=output)
        elif legacy and hasattr(proposer, "finish_batch"):  # drafters that remember answers
            proposer.finish_batch()
        return GenerationResult(outputs, stats, first_at, finish_at, forwards)

    def _draft(
        self,
        pm: SpecplugPluginManager,
        proposer: Proposer | None,
        committed: list[list[int]],
        active: list[bool],
        remaining: list[int],
        ids: list[str] | None,
    ) -> DraftBatch:
        batch = len(committed)
        if proposer is None:
            empty = torch.zeros((batch, 0), dtype=torch.int64)
            return DraftBatch(tokens=empty, num_tokens=torch.zeros(batch, dtype=torch.int64))
        options: dict = {"active": active} if ids is None else {"active": active, "request_ids": ids}
        draft = pm.hook.specplug_propose(proposer=proposer, contexts=committed, options=options)
        # Never draft past the token budget, and nothing for finished rows.
        limit = torch.tensor([max(r - 1, 0) if a else 0 for r, a in zip(remaining, active, strict=True)])
        draft.num_tokens = torch.minimum(draft.num_tokens, limit)
        return draft

    def _commit(self, result, draft, active, committed, outputs, done, max_new_tokens, stats) -> None:
        emitted = result.output_tokens.tolist()
        accepted = result.num_accepted.tolist()
        rescued = getattr(result, "num_rescued", None)
        rescued = rescued.tolist() if rescued is not None else [0] * len(accepted)
        for row, is_active in enumerate(active):
            if not is_active:
                continue
            new = [t for t in emitted[row][: accepted[row] + 1] if t != PAD_TOKEN]
            for pos, token in enumerate(new):
                if token in self.eos:
                    new = new[: pos + 1]
                    done[row] = True
                    break
            new = new[: max_new_tokens - len(outputs[row])]
            committed[row].extend(new)
            outputs[row].extend(new)
            stats.output_tokens += len(new)
            if int(draft.num_tokens[row]) > 0:
                stats.proposed += int(draft.num_tokens[row])
                stats.accepted += accepted[row]
                stats.rescued += rescued[row]
                stats.accepted_per_step.append(accepted[row])
                stats.proposed_per_step.append(int(draft.num_tokens[row]))
            if len(outputs[row]) >= max_new_tokens:
                done[row] = True
