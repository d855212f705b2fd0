"""SGLang's `sglang.srt.plugins` entry point. SGLang calls `register()` in each of its processes."""

from __future__ import annotations

from specplug.core.bootstrap import EngineBootstrap
from specplug.core.plugin_manager import get_plugin_manager


def _install() -> None:
    # `SpeculativeAlgorithm.register("CSD", ...)` joins here once the CSD worker exists.
    get_plugin_manager()


BOOTSTRAP = EngineBootstrap("sglang", _install)


def register() -> None:
    """Idempotent, version-gated; never raises into SGLang."""
    BOOTSTRAP()
