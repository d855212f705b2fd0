"""ToolSpecTRTDrafter: TensorRT-LLM's `Drafter` for ToolSpec (PyTorch backend, `UserProvidedDecodingConfig`).

TensorRT-LLM's executor calls `drafter.prepare_draft_tokens(scheduled_batch, resource_manager)` before each
target forward; the drafter must set `request.py_draft_tokens` on every generation request (the engine then pads
them to the static draft length and verifies them by token match). The drafting goes through the pool's specplug
session (`pool.ToolSpecPool.draft_batch`: one `session.propose` per step), which also sees the request life cycle;
this class only walks the batch.

The class subclasses `tensorrt_llm._torch.speculative.drafter.Drafter`, so it is built on first use by
`drafter_class()` (importing this module never imports TensorRT-LLM). `Drafter.__init__` changed its signature
several times — `(max_concurrency=None)`, `(max_draft_tokens, max_concurrency=None, draft_len_schedule=None)`,
`(max_draft_len=None, max_total_draft_tokens=None, max_concurrency=None, draft_len_schedule=None)` — so it is called
with only the keyword arguments the installed signature names, and the attributes later versions' helpers read
(`max_draft_len`, `max_total_draft_tokens`) are set whatever the version stored.

Instances pickle as (pool, draft length, concurrency limit): the LLM API ships them to its executor workers.
"""

from __future__ import annotations

import inspect
import logging
import types
from typing import Any

from specplug.core.errors import ConfigError
from specplug.core.toolspec.config import METHOD
from specplug.plugins.trtllm_toolspec.engine import EngineMissingError, engine_import
from specplug.plugins.trtllm_toolspec.pool import ToolSpecPool

logger = logging.getLogger("specplug.trtllm_toolspec")

DRAFTER_MODULE = "tensorrt_llm._torch.speculative.drafter"


def base_init_kwargs(init: Any, *, max_draft_len: int, max_concurrency: int | None) -> dict[str, Any]:
    """The keyword arguments, among those any known `Drafter.__init__` took, that `init` accepts by name."""
    offered = {
        "max_draft_len": max_draft_len,
        "max_total_draft_tokens": max_draft_len,  # UserProvided drafts are chains: total = length
        "max_draft_tokens": max_draft_len,
        "max_concurrency": max_concurrency,
        "draft_len_schedule": None,
    }
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(init).parameters
    return {name: value for name, value in offered.items() if name in params and params[name].kind in named}


def check_max_concurrency(max_concurrency: Any) -> None:
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise ConfigError("max_concurrency", max_concurrency, "a positive integer, or null", method=METHOD)


def _row_order(request: Any) -> tuple[bool, int]:
    """TensorRT-LLM's own drafters' order: batch index, else request id (new requests in disaggregated serving)."""
    batch_idx = getattr(request, "py_batch_idx", None)
    return (batch_idx is None, batch_idx if batch_idx is not None else int(request.request_id))


def _engine_pool(resource_manager: Any) -> ToolSpecPool | None:
    """The ToolSpecPool the engine registered as its spec resource manager, if it can be seen."""
    managers = getattr(resource_manager, "resource_managers", None)
    if not hasattr(managers, "values"):
        return None
    return next((m for m in managers.values() if isinstance(m, ToolSpecPool)), None)


class ToolSpecDrafterLogic:
    """Everything of ToolSpecTRTDrafter except its engine base class (see `drafter_class`)."""

    def __init__(self, pool: ToolSpecPool, *, max_draft_len: int | None = None, max_concurrency: int | None = None):
        if not isinstance(pool, ToolSpecPool):
            raise ConfigError("resource_manager", pool, "a ToolSpecPool (see make_pool)", method=METHOD)
        k = pool.config.num_speculative_tokens if max_draft_len is None else max_draft_len
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError("max_draft_len", k, "a positive integer", method=METHOD)
        check_max_concurrency(max_concurrency)
        base_init = super().__init__
        kwargs = base_init_kwargs(base_init, max_draft_len=k, max_concurrency=max_concurrency)
        try:
            base_init(**kwargs)
        except TypeError as exc:
            raise EngineMissingError(
                f"TensorRT-LLM's Drafter.__init__{inspect.signature(base_init)} wants arguments the adapter does "
                f"not know ({exc}); this TensorRT-LLM version is unsupported"
            ) from exc
        self.pool = pool
        self.max_draft_len = k
        if getattr(self, "max_total_draft_tokens", None) is None:
            self.max_total_draft_tokens = k
        if not hasattr(self, "max_concurrency"):
            self.max_concurrency = max_concurrency
        self._pool_switch_logged = False

    def prepare_draft_tokens(self, scheduled_requests: Any, resource_manager: Any = None) -> None:
        """Set `py_draft_tokens` on every generation request (at most `max_draft_len` each, maybe none)."""
        pool = self._pool_for(resource_manager)
        drafting = []
        for request in sorted(scheduled_requests.generation_requests, key=_row_order):
            if getattr(request, "is_dummy", False) or getattr(request, "py_disable_speculative_decoding", False):
                request.py_draft_tokens = []
            else:
                drafting.append(request)
        for request, draft in zip(drafting, pool.draft_batch(drafting, self.max_draft_len), strict=True):
            request.py_draft_tokens = draft

    def _pool_for(self, resource_manager: Any) -> ToolSpecPool:
        """Draft from the pool the engine drives (update/free), should the engine hold a copy of ours."""
        engine_pool = _engine_pool(resource_manager)
        if engine_pool is not None and engine_pool is not self.pool:
            if not self._pool_switch_logged:
                logger.warning("ToolSpec: the engine's spec resource manager is a copy of the drafter's pool; using it")
                self._pool_switch_logged = True
            self.pool = engine_pool
        return self.pool

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_drafter, (self.pool, self.max_draft_len, getattr(self, "max_concurrency", None)))


_CLASSES: dict[type, type] = {}


def drafter_class() -> type:
    """ToolSpecTRTDrafter subclassing the installed TensorRT-LLM's `Drafter` (built once per base class)."""
    base = engine_import(DRAFTER_MODULE, "Drafter")
    cls = _CLASSES.get(base)
    if cls is None:

        def body(namespace: dict[str, Any]) -> None:
            namespace["__module__"] = __name__
            namespace["__qualname__"] = "ToolSpecTRTDrafter"
            namespace["__doc__"] = "ToolSpec as TensorRT-LLM's Drafter (built by drafter_class(); see the module)."

        cls = types.new_class("ToolSpecTRTDrafter", (ToolSpecDrafterLogic, base), exec_body=body)
        _CLASSES[base] = cls
    return cls


def make_drafter(pool: ToolSpecPool, *, max_draft_len: int | None = None, max_concurrency: int | None = None) -> Any:
    """A ToolSpecTRTDrafter drafting from `pool` (imports TensorRT-LLM)."""
    return drafter_class()(pool, max_draft_len=max_draft_len, max_concurrency=max_concurrency)


def _restore_drafter(pool: ToolSpecPool, max_draft_len: int, max_concurrency: int | None) -> Any:
    return make_drafter(pool, max_draft_len=max_draft_len, max_concurrency=max_concurrency)


def __getattr__(name: str) -> Any:
    """`from ...drafter import ToolSpecTRTDrafter` works too (it imports TensorRT-LLM at that moment)."""
    if name == "ToolSpecTRTDrafter":
        return drafter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
