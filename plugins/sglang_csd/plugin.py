"""The SGLang adapter's specplug plugin: what it offers on SGLang, with honest status."""

from __future__ import annotations

from specplug.core.hookspecs import hookimpl
from specplug.core.types import MethodInfo, PluginInfo


@hookimpl
def specplug_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="sglang_csd",
        engine="sglang",
        methods=(
            MethodInfo("csd", "method", "planned", "CSD: calibrated acceptance with an online correction memory"),
        ),
        summary="SGLang adapter (sglang.srt.plugins bootstrap; --speculative-algorithm CSD)",
    )
