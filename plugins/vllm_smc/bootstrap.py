"""vLLM's `vllm.general_plugins` entry point. vLLM calls `register()` in every process it starts."""

from __future__ import annotations

from specplug.core.bootstrap import EngineBootstrap
from specplug.core.plugin_manager import get_plugin_manager


def _install() -> None:
    # Building the manager loads every specplug plugin in this engine process. Engine patches for the
    # specplug methods on vLLM are applied here once those methods exist (through specplug.core.patching).
    get_plugin_manager()


BOOTSTRAP = EngineBootstrap("vllm", _install)


def register() -> None:
    """Idempotent, version-gated; never raises into vLLM."""
    BOOTSTRAP()
