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
            MethodInfo(
                "toolspec",
                "method",
                "experimental",
                "ToolSpec (schema-forced, retrieved and recycled drafts for tool calls) as a TensorRT-LLM Drafter "
                "with its memory in a resource manager; tested against stand-ins of TensorRT-LLM's interface, "
                "unverified on a real install",
            ),
        ),
        summary="TensorRT-LLM adapter (Drafter subclass via UserProvidedDecodingConfig; make_speculative_config, "
        "python -m specplug.plugins.trtllm_toolspec.serve)",
    )
