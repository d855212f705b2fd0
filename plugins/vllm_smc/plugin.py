"""The vLLM adapter's specplug plugin: what it offers on vLLM, with honest status."""

from __future__ import annotations

from specplug.core.hookspecs import hookimpl
from specplug.core.types import MethodInfo, PluginInfo


@hookimpl
def specplug_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="vllm_smc",
        engine="vllm",
        methods=(
            MethodInfo(
                "smc",
                "method",
                "available",
                "SMC-SD: N draft particles as batch rows, importance weights, forks through the prefix cache "
                "(--scheduler-cls ...SMCScheduler, --additional-config specplug.method=smc)",
            ),
            MethodInfo(
                "csd",
                "method",
                "available",
                "CSD's calibrated verification over vLLM's own drafters (--additional-config specplug.method=csd)",
            ),
            MethodInfo(
                "toolspec",
                "proposer",
                "available",
                "ToolSpec drafts as vLLM's custom proposer (--speculative-config model=specplug.ToolSpec), chains",
            ),
        ),
        summary="vLLM adapter (vllm.general_plugins bootstrap; model-runner patches through core.patching)",
    )
