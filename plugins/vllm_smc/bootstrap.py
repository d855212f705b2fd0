"""vLLM's `vllm.general_plugins` entry point. vLLM calls `register()` in every process it starts."""

from __future__ import annotations

from specplug.core.bootstrap import EngineBootstrap
from specplug.core.plugin_manager import get_plugin_manager


def _install() -> None:
    # Building the manager loads every specplug plugin in this engine process; the runner patches (through
    # specplug.core.patching) attach a method only to runners whose --additional-config selects one.
    from specplug.plugins.vllm_smc.runner_hooks import install

    get_plugin_manager()
    install()


BOOTSTRAP = EngineBootstrap("vllm", _install)


def register() -> None:
    """Idempotent, version-gated; never raises into vLLM."""
    BOOTSTRAP()
