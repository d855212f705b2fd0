"""CSD's verify step on SGLang: an AROUND hook on the `eagle_sample` the NGRAM worker calls, through SGLang's
official `HookRegistry` (`sglang/srt/plugins/hook_registry.py`).

`NGRAMWorker.forward_batch_generation` verifies with the module-level name `eagle_sample`
(`sglang/srt/speculative/ngram_worker.py:27` imports it, `:475-485` calls it). The registry replaces that binding
and, through `_propagate_patch` (`hook_registry.py:320-347`), every other module's binding of the same function
(EAGLE workers included). So the hook is a pass-through unless a CSD worker is running this very call (a context
variable the worker sets around its forward) for a batch whose algorithm is the one that worker serves. The
judging itself is the worker's session's (`runtime.CSDRuntime.calibrate` calls `session.verify`).

Why the hook is installed by the CSD worker rather than at plugin load: the registry resolves its target by
importing it, and `load_plugins()` runs in every SGLang process (tokenizer, detokenizer, launcher) and for every
algorithm; importing the NGRAM worker there would cost every SGLang user of specplug, and fails outright where
`sgl_kernel` is missing. The worker's process is the only one that runs the verify step. `HookRegistry.apply_hooks`
logs and swallows failures (`hook_registry.py:159-166`), so `install_verify_hook` checks the hook is really in
place and raises otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import pkgutil
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from specplug.core.errors import PatchError
from specplug.plugins.sglang_csd.runtime import CSDRuntime

log = logging.getLogger("specplug")

TARGET = "sglang.srt.speculative.ngram_worker.eagle_sample"
PLUGIN_NAME = "specplug"  # our entry-point name in `sglang.srt.plugins`, for the registry's logs

_ACTIVE: ContextVar[CSDRuntime | None] = ContextVar("specplug_csd_runtime", default=None)
_registered: set[str] = set()


@contextlib.contextmanager
def activated(runtime: CSDRuntime) -> Iterator[CSDRuntime]:
    """Make `runtime` the one the hook uses for verify calls made inside this block (this thread/context only)."""
    token = _ACTIVE.set(runtime)
    try:
        yield runtime
    finally:
        _ACTIVE.reset(token)


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(verify_input, batch, logits_output) of an `eagle_sample(verify_input, batch, logits_output, ...)` call
    (signature at `sglang/srt/speculative/eagle_utils.py:521-530`)."""
    names = ("verify_input", "batch", "logits_output")
    values = list(args[:3]) + [kwargs[name] for name in names[len(args[:3]) :]]
    return values[0], values[1], values[2]


def _greedy_rows(sampling_info: Any, batch_size: int) -> Any:
    """Rows SGLang treats as greedy, `top_k ≤ 1` (`sampling_params.py:245-248` maps temperature 0 to top_k = 1;
    `sampling_batch_info.py:293` defines `is_all_greedy` the same way): a [bs] bool tensor, None (all rows) or
    False (none)."""
    top_ks = getattr(sampling_info, "top_ks", None)
    if top_ks is not None and getattr(top_ks, "shape", None) is not None and top_ks.shape[0] == batch_size:
        return top_ks.view(-1) <= 1
    return None if getattr(sampling_info, "is_all_greedy", False) else False


def calibrated_eagle_sample(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """AROUND hook: SGLang's verify, then CSD's calibrated verdict where it accepts more (see `runtime`)."""
    runtime = _ACTIVE.get()
    if runtime is None:
        return original(*args, **kwargs)
    verify_input, batch, logits_output = _arguments(args, kwargs)
    if not runtime.serves(getattr(batch, "spec_algorithm", None)):
        return original(*args, **kwargs)
    predict, accept_lens, accept_index = original(*args, **kwargs)  # processes the logits in place
    bs = accept_lens.shape[0]
    if bs == 0:
        return predict, accept_lens, accept_index
    requests = getattr(batch, "reqs", None)
    greedy = _greedy_rows(getattr(batch, "sampling_info", None), bs)
    if greedy is False or (greedy is not None and not bool(greedy.any())):
        _engine_verdict(runtime, verify_input, accept_lens, requests)
        return predict, accept_lens, accept_index
    n = verify_input.draft_token_num
    try:
        return runtime.calibrate(
            candidates=verify_input.draft_token.reshape(bs, n),
            retrieve_index=verify_input.retrieve_index,
            retrieve_next_token=verify_input.retrieve_next_token,
            retrieve_next_sibling=verify_input.retrieve_next_sibling,
            logits=logits_output.next_token_logits,
            greedy_rows=greedy,
            predict=predict,
            accept_lens=accept_lens,
            accept_index=accept_index,
            requests=requests,
        )
    except Exception:
        # Serving goes on with SGLang's own (standard) verdict; the step teaches the memory nothing.
        runtime.failures += 1
        runtime.discard()
        _engine_verdict(runtime, verify_input, accept_lens, requests)
        if runtime.failures == 1 or runtime.failures % 1000 == 0:
            log.exception("specplug CSD: calibrated verify failed (%d so far); kept SGLang's verdict", runtime.failures)
        return predict, accept_lens, accept_index


def _engine_verdict(runtime: CSDRuntime, verify_input: Any, accept_lens: Any, requests: Any) -> None:
    runtime.engine_verdict(
        candidates=getattr(verify_input, "draft_token", None),
        retrieve_next_token=getattr(verify_input, "retrieve_next_token", None),
        retrieve_next_sibling=getattr(verify_input, "retrieve_next_sibling", None),
        accept_lens=accept_lens,
        requests=requests,
    )


def hook_in_effect(target: str = TARGET) -> bool:
    """Whether the function now bound at `target` is (a wrapper chain containing) our hook."""
    try:
        current = pkgutil.resolve_name(target)
    except (ImportError, AttributeError, ValueError):
        return False
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current is calibrated_eagle_sample:
            return True
        for cell in getattr(current, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # an empty cell
                if cell.cell_contents is calibrated_eagle_sample:
                    return True
        current = getattr(current, "__wrapped__", None)
    return False


def install_verify_hook(target: str = TARGET) -> None:
    """Register (once per process) and apply the hook through SGLang's HookRegistry; raise PatchError when it is
    not in effect afterwards (a moved target, or a target another plugin's hooks already sealed)."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookSource, HookType

    if hook_in_effect(target):
        return
    if target not in _registered:
        HookRegistry.register(
            target, calibrated_eagle_sample, HookType.AROUND, source=HookSource(PLUGIN_NAME, "specplug")
        )
        _registered.add(target)
    HookRegistry.apply_hooks()
    if not hook_in_effect(target):
        raise PatchError(
            f"specplug CSD: the verify hook on {target} is not in effect after HookRegistry.apply_hooks() "
            "(see the 'Failed to apply hooks' log above: the target moved in this SGLang version, or hooks on it "
            "were applied before CSD's worker started); CSD cannot run"
        )
