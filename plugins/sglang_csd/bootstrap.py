"""SGLang's `sglang.srt.plugins` entry point. SGLang calls `register()` in each of its processes
(`sglang/srt/plugins/__init__.py:103-141`: launcher, tokenizer, scheduler, detokenizer)."""

from __future__ import annotations

from specplug.core.bootstrap import EngineBootstrap
from specplug.core.plugin_manager import get_plugin_manager


def _install() -> None:
    get_plugin_manager()
    # `--speculative-algorithm CSD`. Light: needs SGLang's spec_info only; the worker (and its verify hook) come
    # in the scheduler process when the algorithm is actually selected.
    from specplug.plugins.sglang_csd.registration import register_csd

    register_csd()


BOOTSTRAP = EngineBootstrap("sglang", _install)


def register() -> None:
    """Idempotent, version-gated; never raises into SGLang."""
    BOOTSTRAP()
