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
            MethodInfo(
                "csd",
                "method",
                "experimental",
                "CSD on SGLang's NGRAM worker (--speculative-algorithm CSD, served by a MethodSession of csd_tree): "
                "registration and argument handling tested against SGLang 0.5.23 on CPU, the verify hook through "
                "SGLang's HookRegistry around a stand-in NGRAM worker; serving needs a GPU and is unverified",
            ),
        ),
        summary="SGLang adapter (sglang.srt.plugins bootstrap; --speculative-algorithm CSD, SPECPLUG_CSD_CONFIG)",
    )
