"""The TensorRT-LLM adapter's specplug plugin: what it offers on TensorRT-LLM, with honest status."""

from __future__ import annotations

from specplug.core.hookspecs import hookimpl
from specplug.core.types import MethodInfo, PluginInfo


@hookimpl
def specplug_plugin_info() -> PluginInfo:
    return PluginInfo(
        name="trtllm_toolspec",
        engine="trtllm",
        methods=(
            MethodInfo("toolspec", "method", "planned", "ToolSpec: schema-forced and retrieved drafts for tool calls"),
        ),
        summary="TensorRT-LLM adapter (Drafter subclass via UserProvidedDecodingConfig)",
    )
