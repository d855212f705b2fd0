"""ToolSpecPool: TensorRT-LLM's resource manager for ToolSpec, and the adapter's specplug host.

TensorRT-LLM hands a user-provided resource manager (`UserProvidedDecodingConfig.resource_manager`) the request
life cycle: `update_resources(scheduled_batch)` after each step and `free_resources(request)` when a request ends
(the `BaseResourceManager` protocol of `tensorrt_llm/_torch/pyexecutor/resource_manager.py`). That is where a
request's end must be announced, so the pool, not the drafter, holds the process's `core.host.MethodSession` (the
NGramPoolManager / NGramDrafter split of TensorRT-LLM's own n-gram method). The `Drafter` subclass (`drafter.py`)
only walks the batch and hands its requests to `draft_batch`.

The pool reaches ToolSpec only through the session, i.e. through the plugin hooks (`core.toolspec.plugin`):
- the session builds the memory and the proposer (`specplug_make_memory` / `specplug_make_proposer`), with the
  worker's tokenizer and draft length as `session.facts`;
- a request's first draft announces its start (`session.request_started`: prompt, tools, tenant);
- each step drafts the whole batch in one `session.propose(contexts, request_ids=, budgets=)`;
- the engine's acceptance feedback for the previous step's drafts is announced as a step (`session.step`);
- a request's end is announced (`session.request_finished` with its answer: the method's hook adds it to the
  tenant's memory); one that must not be remembered (cancelled, or its drafting failed) is first dropped from the
  proposer without remembering (`session.proposer.finish_request(remember=False)`), since the finish hook does not
  yet tell apart how a request ended;
- `shutdown()` closes the session (`session.close()`: the method's hook writes `save_path`).

Requests are keyed by TensorRT-LLM's request id, never by batch row: rows move between steps.

Fallbacks (serving never fails because of a draft): an exception while drafting one request is logged once for
that request, which then gets no drafts until it ends (and its answer is not remembered) — a batch whose
`session.propose` raises is drafted again row by row to find the request at fault; if the session cannot be
opened in the worker at all, ToolSpec is disabled with one error log and the engine decodes without drafts.
Drafts never change outputs: TensorRT-LLM verifies them by token match (no draft logits are given).

Pickling: the LLM API ships the speculative config to its executor worker(s), so a pool pickles as its settings
only; the tokenizer and the session are built lazily on first use, inside the worker. A pickled copy starts
from `memory_path` again, whatever the original had learned.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from itertools import chain
from typing import Any

from specplug.core.errors import ConfigError
from specplug.core.persist import DataFileError
from specplug.core.toolspec.config import METHOD, ToolSpecConfig
from specplug.core.types import RequestContext, StepOutcome
from specplug.plugins.trtllm_toolspec.engine import engine_import

logger = logging.getLogger("specplug.trtllm_toolspec")

Tools = Sequence[Mapping[str, Any]]
ToolsFor = Callable[[Any], "Tools | None"]
TenantFor = Callable[[Any], "str | None"]
CHECK_REQUEST = "__specplug_toolspec_startup_check__"


def request_id(request: Any) -> str:
    """TensorRT-LLM's id of a request (`py_request_id`, else `request_id`), as the core's string key."""
    rid = getattr(request, "py_request_id", None)
    return str(rid if rid is not None else request.request_id)


def is_complete(request: Any) -> bool:
    """Whether the request finished normally (`LlmRequestState.GENERATION_COMPLETE`, or `is_finished`).

    Compared by name so that this module never imports the engine's enum.
    """
    state = getattr(request, "state", None)
    name = getattr(state, "name", None) or str(state)
    if name.rsplit(".", 1)[-1] == "GENERATION_COMPLETE":
        return True
    finished = getattr(request, "is_finished", False)
    return bool(finished() if callable(finished) else finished)


def check_tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if (
        isinstance(tools, (str, bytes))
        or not isinstance(tools, Sequence)
        or not all(isinstance(t, Mapping) for t in tools)
    ):
        raise ConfigError("tools", tools, "a list of OpenAI tool objects, or null", method=METHOD)
    return [dict(t) for t in tools]


def check_tenant(tenant: Any) -> str:
    if not isinstance(tenant, str) or not tenant:
        raise ConfigError("tenant", tenant, "a non-empty string", method=METHOD)
    return tenant


def check_hook(name: str, hook: Any) -> Any:
    """A per-request hook must be callable and picklable: TensorRT-LLM ships the config to its workers."""
    if hook is None:
        return None
    if not callable(hook):
        raise ConfigError(name, hook, "a callable taking TensorRT-LLM's LlmRequest, or null", method=METHOD)
    try:
        pickle.dumps(hook)
    except Exception as exc:
        raise ConfigError(
            name, hook, f"a picklable callable (a module-level function; pickling failed: {exc})", method=METHOD
        ) from exc
    return hook


class ToolSpecPool:
    """ToolSpec's per-request state and cross-request memory, in TensorRT-LLM's resource-manager protocol.

    Build it with `make_pool` (or `make_speculative_config`), which gives the engine-facing subclass of
    TensorRT-LLM's `BaseResourceManager`; this plain class holds all the logic and needs no engine.
    """

    _engine_bound = False  # True on pool_class()'s subclass, so that unpickling rebuilds the same kind

    def __init__(
        self,
        tokenizer: str | os.PathLike[str],
        config: ToolSpecConfig | Mapping[str, Any] | None = None,
        *,
        tools: Tools | None = None,
        tenant: str = "default",
        tools_for: ToolsFor | None = None,
        tenant_for: TenantFor | None = None,
    ) -> None:
        if not isinstance(tokenizer, (str, os.PathLike)) or not os.fspath(tokenizer):
            raise ConfigError("tokenizer", tokenizer, "a tokenizer directory or hub name (a string)", method=METHOD)
        self.tokenizer_path = os.fspath(tokenizer)
        self.config = config if isinstance(config, ToolSpecConfig) else ToolSpecConfig.from_mapping(config or {})
        self.tools = check_tools(tools)
        self.tenant = check_tenant(tenant)
        self.tools_for = check_hook("tools_for", tools_for)
        self.tenant_for = check_hook("tenant_for", tenant_for)
        self._start_runtime()

    def _start_runtime(self) -> None:
        """Per-process state, never pickled."""
        self._lock = threading.Lock()
        self._session: Any = None
        self._broken: BaseException | None = None
        self._started: set[str] = set()  # announced as started, not yet as finished
        self._failed: set[str] = set()
        self._last_draft: dict[str, int] = {}
        self._traceback_logged = False
        self.steps = 0  # request-steps drafted for
        self.proposed = 0  # draft tokens handed to the engine
        self.accepted = 0  # of those, accepted by the engine (py_num_accepted_draft_tokens)

    def init_kwargs(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer_path,
            "config": self.config,
            "tools": self.tools,
            "tenant": self.tenant,
            "tools_for": self.tools_for,
            "tenant_for": self.tenant_for,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_pool, (self._engine_bound, self.init_kwargs()))

    # -- the session, opened lazily in the process that drafts -------------------------------------------------
    @property
    def session(self) -> Any:
        """This process's `MethodSession` for ToolSpec (opened on first use: tokenizer, memory file)."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._open()
        return self._session

    @property
    def core(self) -> Any:
        """The session's proposer: the engine-neutral ToolSpecDrafter the plugin hooks built."""
        return self.session.proposer

    @property
    def built(self) -> bool:
        return self._session is not None

    def _open(self) -> Any:
        from specplug.core.host import MethodSession

        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        except Exception as exc:
            raise ConfigError(
                "tokenizer", self.tokenizer_path, f"a tokenizer transformers can load ({exc})", method=METHOD
            ) from exc
        facts = {"tokenizer": tokenizer, "num_speculative_tokens": self.config.num_speculative_tokens}
        try:
            session = MethodSession(METHOD, asdict(self.config), engine="trtllm", facts=facts)
        except DataFileError as exc:
            raise ConfigError(
                "memory_path", self.config.memory_path, f"a readable ToolSpec memory file ({exc.reason})", method=METHOD
            ) from exc
        if session.proposer is None:
            raise ConfigError("method", METHOD, "a method with a proposer of its own", method=METHOD)
        if self.config.save_path:  # in case the engine never calls shutdown() (a pool that is gone saves nothing)
            atexit.register(_shutdown_if_alive, weakref.ref(self))
        return session

    def check(self) -> None:
        """Open the session and compile the configured tools now, so that errors come at startup (the check is
        not a request: the proposer is asked directly, and nothing is announced)."""
        core = self.core
        core.start_request(CHECK_REQUEST, [], tools=self.tools, tenant=self.tenant)
        core.finish_request(CHECK_REQUEST, remember=False)

    # -- drafting (called by the Drafter subclass) --------------------------------------------------------------
    def draft_batch(self, requests: Sequence[Any], max_draft_len: int) -> list[list[int]]:
        """Draft tokens for generation requests, within TensorRT-LLM's budget; [] for a request on any failure."""
        drafts: list[list[int]] = [[] for _ in requests]
        if self._broken is not None or not requests:
            return drafts
        try:
            session = self.session
        except Exception as exc:
            self._broken = exc
            logger.error("ToolSpec is disabled (no drafts; decoding continues without them): %s", exc, exc_info=exc)
            return drafts
        self._announce_feedback(requests)
        rows: list[tuple[int, str, list[int], int]] = []  # (position, request id, tokens, budget)
        for position, request in enumerate(requests):
            rid = request_id(request)
            if rid in self._failed:
                continue
            try:
                tokens = [int(t) for t in request.get_tokens(0)]
                prompt_len = int(request.py_orig_prompt_len)
                if rid not in self._started:
                    context = RequestContext(
                        request_id=rid,
                        prompt_token_ids=tokens[:prompt_len],
                        tenant=self._tenant_of(request),
                        sampling={"max_tokens": int(request.py_max_new_tokens)},
                        tools=self._tools_of(request),
                    )
                    self._started.add(rid)  # announced (even should a start hook refuse it): its end will be too
                    session.request_started(context)
                room = prompt_len + int(request.py_max_new_tokens) - len(tokens) - 1
            except Exception as exc:
                self._fail(rid, exc)
                continue
            rows.append((position, rid, tokens, max(0, min(int(max_draft_len), room))))
        for (position, rid, _, budget), draft in zip(rows, self._propose(session, rows), strict=True):
            if draft is None:
                continue
            drafts[position] = draft[:budget]
            self.steps += 1
            self.proposed += len(drafts[position])
            self._last_draft[rid] = len(drafts[position])
        return drafts

    def _propose(self, session: Any, rows: Sequence[tuple[int, str, list[int], int]]) -> list[list[int] | None]:
        """One `session.propose` for the batch; if it raises, row by row, so only the failing request loses its
        drafts (None: that row failed). The rows drafted before the failure are drafted again (the proposer's
        per-source counters then count that step twice for them)."""
        if not rows:
            return []
        contexts, ids, budgets = ([row[i] for row in rows] for i in (2, 1, 3))
        try:
            return _chains(session.propose(contexts, request_ids=ids, budgets=budgets))
        except Exception as exc:
            if len(rows) == 1:
                self._fail(rows[0][1], exc)
                return [None]
        return [self._propose(session, [row])[0] for row in rows]

    def _announce_feedback(self, requests: Sequence[Any]) -> None:
        """Announce, as one step, how many of the previous step's drafts the engine accepted (TorchSampler's
        `py_num_accepted_draft_tokens`, known when the request comes back)."""
        ids, proposed, accepted = [], [], []
        for request in requests:
            rid = request_id(request)
            last = self._last_draft.pop(rid, 0)
            if last:
                ids.append(rid)
                proposed.append(last)
                accepted.append(max(0, min(int(getattr(request, "py_num_accepted_draft_tokens", 0) or 0), last)))
        if ids:
            self._step(ids, proposed, accepted)

    def _step(self, ids: list[str], proposed: list[int], accepted: list[int]) -> None:
        import torch

        self.accepted += sum(accepted)
        outcome = StepOutcome(request_ids=ids, num_proposed=torch.tensor(proposed), num_accepted=torch.tensor(accepted))
        try:
            self.session.step(outcome)
        except Exception as exc:  # an observer's bug must not stop decoding
            logger.warning("ToolSpec: a step observer failed (decoding continues): %s", exc, exc_info=exc)

    def _tools_of(self, request: Any) -> Tools | None:
        if self.tools_for is not None:
            tools = self.tools_for(request)
            if tools is not None:
                return check_tools(tools)
        return self.tools

    def _tenant_of(self, request: Any) -> str:
        if self.tenant_for is not None:
            tenant = self.tenant_for(request)
            if tenant is not None:
                return check_tenant(str(tenant))
        return self.tenant

    def _fail(self, rid: str, exc: BaseException) -> None:
        self._failed.add(rid)
        first = not self._traceback_logged
        self._traceback_logged = True
        logger.warning(
            "ToolSpec: drafting failed for request %s; it gets no drafts until it ends (output is unaffected): %s: %s",
            rid,
            type(exc).__name__,
            exc,
            exc_info=exc if first else None,
        )

    # -- request ends ---------------------------------------------------------------------------------------
    def finish(self, request: Any, *, remember: bool) -> None:
        """Announce a request's end; a normally finished answer joins its tenant's memory (the finish hook)."""
        rid = request_id(request)
        failed = rid in self._failed
        self._failed.discard(rid)
        if rid not in self._started:
            self._last_draft.pop(rid, None)
            return
        self._started.discard(rid)
        keep = remember and not failed
        session = self._session
        output: list[int] | None = None
        try:
            last = self._last_draft.pop(rid, 0)
            if keep and last:  # the final step's feedback
                accepted = int(getattr(request, "py_num_accepted_draft_tokens", 0) or 0)
                self._step([rid], [last], [max(0, min(accepted, last))])
            tokens = [int(t) for t in request.get_tokens(0)]  # the answer's last tokens came after the last draft
            output = tokens[int(request.py_orig_prompt_len) :]
            reason = "stop" if keep else ("failed" if failed else "abort")  # the finish hook remembers only answers
            session.request_finished(rid, len(output), reason, output_token_ids=output)
        except Exception as exc:
            logger.warning("ToolSpec: could not finish request %s (its answer is not remembered): %s", rid, exc)
            try:
                if session.proposer.has_request(rid):
                    session.proposer.finish_request(rid, remember=False)
            except Exception:
                logger.debug("ToolSpec: request %s could not be dropped either", rid, exc_info=True)

    # -- BaseResourceManager protocol -------------------------------------------------------------------------
    def get_max_resource_count(self) -> int:
        return 0  # holds no device resources: must not gate the scheduler

    def get_needed_resource_to_completion(self, request: Any) -> int:
        return 0

    def add_dummy_requests(self, request_ids: Sequence[int]) -> None:
        """Warm-up and CUDA-graph dummies get no state (the drafter skips `is_dummy` requests)."""

    def prepare_resources(self, scheduled_batch: Any) -> None:
        """Nothing to reserve: per-request state starts at the request's first draft."""

    def update_resources(self, scheduled_batch: Any) -> None:
        """After a step: requests that completed in it end here (answer into the memory)."""
        requests = chain(
            getattr(scheduled_batch, "context_requests", ()) or (),
            getattr(scheduled_batch, "generation_requests", ()) or (),
        )
        for request in requests:
            if is_complete(request):
                self.finish(request, remember=True)

    def free_resources(self, request: Any) -> None:
        """A request leaves the engine (finished, cancelled or paused): drop its state; remember it if complete."""
        self.finish(request, remember=is_complete(request))

    def shutdown(self) -> None:
        """Close the session (once): its close hook saves the memory to `save_path`; log the acceptance counts."""
        session = self._session
        if session is None or session.closed:
            return
        try:
            session.close()
        except Exception as exc:  # at shutdown: say so, never raise into the engine
            logger.error("ToolSpec: closing the session failed (the memory may not be saved): %s", exc)
        logger.info("ToolSpec stats: %s", self.stats())

    # -- extras --------------------------------------------------------------------------------------------
    def save(self, path: str | None = None) -> None:
        target = path or self.config.save_path
        if not target:
            raise ConfigError("save_path", target, "a file path to save the memory to", method=METHOD)
        self.core.save(target)

    def stats(self) -> dict[str, Any]:
        """Draft counts in this process: what was proposed, accepted (engine feedback), and by which source."""
        core = self._session.proposer if self._session is not None else None
        return {
            "steps": self.steps,
            "proposed": self.proposed,
            "accepted": self.accepted,
            "acceptance_rate": self.accepted / self.proposed if self.proposed else 0.0,
            "by_source": dict(core.drafted) if core is not None else {},
            "active_requests": len(core.active_requests()) if core is not None else 0,
            "disabled": repr(self._broken) if self._broken is not None else None,
        }


_CLASSES: dict[type, type] = {}


def pool_class() -> type[ToolSpecPool]:
    """ToolSpecPool subclassing the installed TensorRT-LLM's `BaseResourceManager` (built once per base class)."""
    base = engine_import("tensorrt_llm._torch.pyexecutor.resource_manager", "BaseResourceManager")
    cls = _CLASSES.get(base)
    if cls is None:
        namespace = {"__module__": __name__, "__qualname__": "ToolSpecTRTPool", "_engine_bound": True}
        namespace["__doc__"] = "ToolSpecPool as TensorRT-LLM's BaseResourceManager (built by pool_class())."
        cls = type(base)("ToolSpecTRTPool", (ToolSpecPool, base), namespace)
        _CLASSES[base] = cls
    return cls


def make_pool(tokenizer: str | os.PathLike[str], config: ToolSpecConfig | Mapping[str, Any] | None = None, **kw: Any):
    """A pool TensorRT-LLM accepts as `resource_manager` (imports TensorRT-LLM)."""
    return pool_class()(tokenizer, config, **kw)


def _chains(batch: Any) -> list[list[int]]:
    """A DraftBatch's rows as token lists."""
    counts = batch.num_tokens.tolist()
    return [row[:count] for row, count in zip(batch.tokens.tolist(), counts, strict=True)]


def _shutdown_if_alive(ref: weakref.ref[ToolSpecPool]) -> None:
    pool = ref()
    if pool is not None:
        pool.shutdown()


def _restore_pool(engine_bound: bool, kwargs: dict[str, Any]) -> ToolSpecPool:
    cls = pool_class() if engine_bound else ToolSpecPool
    return cls(**kwargs)
