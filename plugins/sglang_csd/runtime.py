"""One SGLang scheduler process as a specplug host: the `MethodSession` of the method `--speculative-algorithm`
selects (`settings.METHODS`, "CSD" -> "csd_tree"), SGLang's verify tree judged by that session's verifier, and
the step and request announcements. Engine types appear only as duck-typed tensors and request objects, so it is
testable alone. The method's pieces and its learning live behind the hooks (`core.csd.plugin` for CSD); nothing
here knows what the verifier does with its memory.

How a verify step goes (driven by `verify_hook` and `worker.CSDWorker`):
1. SGLang's own `eagle_sample` runs first: it applies penalties, logit bias and the grammar mask to the logits in
   place and gives the standard result (greedy tree verification for greedy requests).
2. `calibrate` judges the same tree with the same (processed) logits through `session.verify` (the wrapped-call
   hook `specplug_verify`). A row takes the method's result only where it accepted strictly more tokens;
   otherwise SGLang's own row stays, bit for bit — so with λ = ∞ or τ = 1 the output is SGLang's. Only greedy rows
   (`top_k ≤ 1`) are judged: CSD is a rule for greedy verification, and a sampled row keeps SGLang's verdict.
   A step SGLang verified alone (no greedy row, or the method's verify failed) is recorded by `engine_verdict`.
3. The step's outcome (per-row proposed / accepted / rescued counts and the judged mismatch pairs) waits in
   `pending` and is announced by the worker right after the forward returns (`commit` -> `session.step`), so every
   decision of a step reads the memory as it was when the step began. The method learns from that announcement
   (CSD: `outcome.extra["mismatches"]`, unless `online` is off); a failed forward announces nothing (`discard`).
Requests are announced as started (`session.request_started`) just before the first step that verified them, and
as finished (`session.request_finished`) when SGLang's batch-result processor tells the worker
(`note_request_finished`). Persistence is the method's: its hooks save `save_path` periodically and at
`session.close()`; the periodic saves at `save_interval_s` are CSD's own (`core.persist.PeriodicSaver`, from the step
announcements).
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from specplug.core.errors import ConfigError
from specplug.core.host import MethodSession, tenant_from_salt
from specplug.core.types import RequestContext, StepOutcome
from specplug.plugins.sglang_csd.settings import ALGORITHM, METHODS, CSDSettings, method_config
from specplug.plugins.sglang_csd.tree_layout import draft_batch_from_sglang, sglang_outputs

log = logging.getLogger("specplug")

Sync = Callable[[Sequence[torch.Tensor]], None]

# SGLang's request fields a method's hooks may read as `RequestContext.sampling` (`SamplingParams` attribute names).
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "max_new_tokens", "frequency_penalty", "presence_penalty")
# SGLang's finish-reason classes (`managers/schedule_batch.py`) as the engine-neutral words of the finish hook.
FINISH_REASONS = {"FINISH_MATCHED_TOKEN": "stop", "FINISH_MATCHED_STR": "stop", "FINISH_LENGTH": "length"}


@dataclass
class _Rows:
    """One verify call's rows, until the step is announced."""

    request_ids: list[str]
    requests: Sequence[Any] | None  # SGLang's `Req` objects of the rows (None: not known, e.g. stand-in batches)
    proposed: torch.Tensor  # draft nodes per row, SGLang's padding left out
    accepted: torch.Tensor  # accepted draft tokens per row (the verdict SGLang commits)
    rescued: torch.Tensor | None
    fallback: bool  # SGLang's own rule decided every row


def _row_ids(requests: Sequence[Any] | None, batch_size: int) -> tuple[list[str], Sequence[Any] | None]:
    if requests is not None and len(requests) == batch_size:
        return [str(req.rid) for req in requests], requests
    return [f"row{b}" for b in range(batch_size)], None


def request_context(req: Any) -> RequestContext:
    """What the method's hooks may know of one SGLang `Req` (prompt, greedy or sampled settings)."""
    params = getattr(req, "sampling_params", None)
    sampling = {name: getattr(params, name) for name in SAMPLING_FIELDS if hasattr(params, name)}
    prompt = getattr(req, "origin_input_ids", None) or ()
    return RequestContext(
        request_id=str(req.rid),
        prompt_token_ids=[int(t) for t in prompt],
        tenant=tenant_from_salt(getattr(req, "cache_salt", None)),  # SGLang's per-tenant prefix-cache key
        sampling=sampling,
    )


def finish_reason(req: Any, natural_stop: bool) -> str:
    if natural_stop:
        return "stop"
    reason = getattr(req, "finished_reason", None)
    return FINISH_REASONS.get(type(reason).__name__, "abort")


class CSDRuntime:
    """The host state of one process. `sync` broadcasts the step's verdict tensors from TP rank 0 (None: single
    rank); `saver` is False on every rank but one, so one file has one writer. `num_draft_tokens` is SGLang's
    `--speculative-num-draft-tokens` (the session's γ is one less); unknown in unit tests."""

    def __init__(
        self,
        settings: CSDSettings,
        *,
        algorithm: str = ALGORITHM,
        model_path: str | None = None,
        num_draft_tokens: int | None = None,
        sync: Sync | None = None,
        saver: bool = True,
        pm: Any = None,
    ) -> None:
        self.settings = settings
        self.config = settings.config
        self.algorithm = algorithm
        self.sync = sync
        self.saver = saver and self.config.save_path is not None
        facts: dict[str, Any] = {"model_path": model_path}
        if num_draft_tokens is not None:
            facts["num_speculative_tokens"] = num_draft_tokens - 1
        given = method_config(settings, gamma_from_engine=num_draft_tokens is not None, saver=self.saver)
        self.session = MethodSession(METHODS[algorithm], given, engine="sglang", facts=facts, pm=pm)
        if self.session.verifier is None:
            allowed = f"a method with a verifier of its own ({self.session.method!r} has none)"
            raise ConfigError("--speculative-algorithm", algorithm, allowed, method=self.session.method)
        self.verifier = self.session.verifier
        self.memory = getattr(self.verifier, "memory", None)  # what the verifier reads (CSD: the namespace's)
        self._label_memory(model_path)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # this step's judged mismatches, their rows
        self._rows: list[_Rows] = []
        self._requests: dict[str, Any] = {}  # announced as started, not yet finished: request id -> SGLang Req
        self.steps = self.calibrated_rows = self.rescued_tokens = self.extra_tokens = self.failures = 0
        atexit.register(self.close)

    def _label_memory(self, model_path: str | None) -> None:
        """Record on the session's memory where it goes on learning (model, engine); warn if the file came from
        another model (token ids must mean the same)."""
        metadata = getattr(self.session.memory, "metadata", None)
        if not isinstance(metadata, dict):
            return
        recorded = metadata.get("model_path")
        if model_path is not None and recorded is not None and recorded != model_path:
            log.warning(
                "specplug CSD: %s was calibrated with model %s, this server runs %s; token ids must mean the same",
                self.config.memory_path,
                recorded,
                model_path,
            )
        if model_path is not None:
            metadata["model_path"] = model_path
        metadata["engine"] = "sglang"

    def engine_propose(self, call: Callable[..., Any], *args: Any) -> Any:
        """SGLang's own drafting (`call(*args)`), made through `specplug_propose` (`core.host.EngineProposer`) so
        that wrappers see every drafting call, whoever drafts."""
        return self.session.engine_propose(call, *args)

    def serves(self, algorithm: Any) -> bool:
        """Whether a batch's `spec_algorithm` (an enum member or a `CustomSpecAlgo`) is the one this host serves."""
        return getattr(algorithm, "name", None) == self.algorithm

    # --- the verify step -------------------------------------------------------------------------------------

    def calibrate(
        self,
        *,
        candidates: torch.Tensor,
        retrieve_index: torch.Tensor,
        retrieve_next_token: torch.Tensor,
        retrieve_next_sibling: torch.Tensor,
        logits: torch.Tensor,
        greedy_rows: torch.Tensor | None,
        predict: torch.Tensor,
        accept_lens: torch.Tensor,
        accept_index: torch.Tensor,
        requests: Sequence[Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SGLang's verdict (`predict`, `accept_lens`, `accept_index`) with the method's where it accepts more.

        candidates [bs, n] (root first), links [bs, n], logits [bs*n, V] as processed by SGLang's verify;
        `requests`: SGLang's `Req` of each row (`batch.reqs`), for the announcements.
        """
        bs, n = candidates.shape
        draft = draft_batch_from_sglang(candidates, retrieve_next_token, retrieve_next_sibling)
        proposed = draft.num_tokens
        if greedy_rows is not None:
            draft.num_tokens = torch.where(greedy_rows.to(torch.bool), proposed, 0)
        ids, reqs = _row_ids(requests, bs)
        self._announce_new(ids, reqs)  # before verifying: a request's tenant decides which memory it reads
        result = self.session.verify(draft, logits.reshape(bs, n, -1), request_ids=ids)
        ours_predict, ours_lens, ours_index = sglang_outputs(result, retrieve_index, predict.dtype)
        take = ours_lens > accept_lens
        new_predict = torch.where(take.repeat_interleave(n), ours_predict, predict)
        new_index = torch.where(take.unsqueeze(1), ours_index.to(accept_index.dtype), accept_index)
        new_lens = torch.where(take, ours_lens.to(accept_lens.dtype), accept_lens)
        if self.sync is not None:
            self.sync([new_predict, new_index, new_lens])
        mismatches = getattr(result, "mismatches", None)
        if mismatches is not None and mismatches.numel():
            offset = sum(len(part.request_ids) for part in self._rows)  # rows of the step's announcement
            rows = getattr(result, "mismatch_rows", None)
            rows = rows + offset if rows is not None else torch.full((len(mismatches),), -1, dtype=torch.int64)
            self.pending.append((mismatches, rows))
        rescued = getattr(result, "num_rescued", None)
        if rescued is not None:
            rescued = torch.where(take, rescued, 0)
        self._rows.append(_Rows(ids, reqs, proposed, new_lens.to(torch.int64) - 1, rescued, fallback=False))
        self.steps += 1
        self.calibrated_rows += int(draft.num_tokens.gt(0).sum())
        self.extra_tokens += int((new_lens - accept_lens).sum())
        if rescued is not None:
            self.rescued_tokens += int(rescued.sum())
        return new_predict, new_lens, new_index

    def engine_verdict(
        self,
        *,
        candidates: Any,
        retrieve_next_token: Any,
        retrieve_next_sibling: Any,
        accept_lens: torch.Tensor,
        requests: Sequence[Any] | None = None,
    ) -> None:
        """Record a step SGLang's own rule verified alone (no greedy row, or the method's verify failed): its
        counts are announced with `extra["fallback"]`, and nothing is learned from it. Never raises."""
        try:
            bs, n = int(accept_lens.shape[0]), int(retrieve_next_token.shape[1])
            try:
                tree = draft_batch_from_sglang(candidates.reshape(bs, n), retrieve_next_token, retrieve_next_sibling)
                proposed = tree.num_tokens
            except Exception:  # a tree the layout cannot read: count every node but the root
                proposed = torch.full((bs,), n - 1)
            ids, reqs = _row_ids(requests, bs)
            self._rows.append(_Rows(ids, reqs, proposed, accept_lens.to(torch.int64) - 1, None, fallback=True))
        except Exception:
            log.debug("specplug CSD: could not record SGLang's own verdict for the step", exc_info=True)

    def commit(self) -> int:
        """Announce this step through `session.step` (after announcing the requests it verified for the first
        time); returns how many observations the memory gained from the announcement (0 with `online` off)."""
        rows, self._rows = self._rows, []
        pending, self.pending = self.pending, []
        if not rows:
            return 0
        for part in rows:
            self._announce_new(part.request_ids, part.requests)
        extra: dict[str, Any] = {}
        if pending:
            extra["mismatches"] = torch.cat([pairs for pairs, _ in pending]).cpu()
            extra["mismatch_rows"] = torch.cat([rows for _, rows in pending]).cpu()
        if all(part.fallback for part in rows):
            extra["fallback"] = True
        outcome = StepOutcome(
            request_ids=[rid for part in rows for rid in part.request_ids],
            num_proposed=torch.cat([part.proposed.to(torch.int64).cpu() for part in rows]),
            num_accepted=torch.cat([part.accepted.cpu() for part in rows]),
            num_rescued=torch.cat(
                [(part.rescued if part.rescued is not None else torch.zeros_like(part.accepted)).cpu() for part in rows]
            ),
            extra=extra,
        )
        before = self._observations()
        self._record_stats()
        self.session.step(outcome)
        return self._observations() - before

    def _announce_new(self, ids: Sequence[str], requests: Sequence[Any] | None) -> None:
        for rid, req in zip(ids, requests or (), strict=False):
            if rid not in self._requests:
                self._requests[rid] = req
                self.session.request_started(request_context(req))

    def discard(self) -> None:
        """Forget this step (the forward failed): nothing of it is announced, nothing learned."""
        self.pending = []
        self._rows = []

    def request_finished(self, rid: str, natural_stop: bool) -> None:
        """SGLang finished a request (`note_request_finished`): announce it, if it was announced as started."""
        req = self._requests.pop(str(rid), None)
        if req is None:
            return
        output = [int(t) for t in getattr(req, "output_ids", None) or ()]
        self.session.request_finished(str(rid), len(output), finish_reason(req, natural_stop), output_token_ids=output)

    # --- after the step --------------------------------------------------------------------------------------

    def on_verify_complete(self, num_correct_drafts_per_req: Sequence[int]) -> None:
        """Called once SGLang has the accept counts on the CPU: the counters the memory file records are refreshed
        (the saves themselves are CSD's, at its `save_interval_s`, from the step announcements)."""
        del num_correct_drafts_per_req
        if self.saver:
            self._record_stats()

    def save(self) -> bool:
        """Write the session's memory to `save_path` now (atomic, checksummed); a failure is logged, never raised."""
        save = getattr(self.session.memory, "save_quietly", None)
        if not self.saver or self.config.save_path is None or save is None:
            return False
        self._record_stats()
        return bool(save(self.config.save_path))

    def close(self) -> bool:
        """Orderly end (also at interpreter exit): wait for a running save, then `session.close()`, whose hooks
        write the memory to `save_path` on the saving rank. Returns whether this call closed the session."""
        if self.session.closed:
            return False
        atexit.unregister(self.close)
        self._record_stats()
        self.session.close()
        return True

    def _observations(self) -> int:
        return int(getattr(self.memory, "observations", 0) or 0)

    def _record_stats(self) -> None:
        metadata = getattr(self.session.memory, "metadata", None)
        if isinstance(metadata, dict):
            metadata["stats"] = self.stats()

    def stats(self) -> dict[str, Any]:
        memory = getattr(self.session.memory, "summary", None)
        return {
            "steps": self.steps,
            "calibrated_rows": self.calibrated_rows,
            "rescued_tokens": self.rescued_tokens,
            "extra_tokens": self.extra_tokens,
            "failures": self.failures,
            "memory": memory() if callable(memory) else None,
        }
