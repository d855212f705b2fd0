"""`make_speculative_config`: ToolSpec for TensorRT-LLM's LLM API in one call.

    from tensorrt_llm import LLM
    from specplug.plugins.trtllm_toolspec import make_speculative_config

    llm = LLM(model_dir, speculative_config=make_speculative_config(model_dir, tools=tools))

TensorRT-LLM takes a user drafter only as a Python object (`UserProvidedDecodingConfig(drafter=...,
resource_manager=...)`; YAML cannot carry one), and a bad setting would otherwise surface inside an executor worker
after the model has loaded. So everything is checked here, in the calling process, before the LLM is built:
settings (unknown keys refused), tools, per-request hooks (callable and picklable), and — with `check=True`, the
default — the tokenizer loads, the memory file loads, and the tools compile to a tool-call grammar.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from specplug.core.errors import ConfigError
from specplug.core.toolspec.config import METHOD, ToolSpecConfig
from specplug.plugins.trtllm_toolspec.drafter import check_max_concurrency, make_drafter
from specplug.plugins.trtllm_toolspec.engine import engine_import
from specplug.plugins.trtllm_toolspec.pool import TenantFor, Tools, ToolsFor, make_pool

CONFIG_MODULE = "tensorrt_llm.llmapi.llm_args"


def make_speculative_config(
    tokenizer: str | os.PathLike[str],
    *,
    tools: Tools | None = None,
    tenant: str = "default",
    tools_for: ToolsFor | None = None,
    tenant_for: TenantFor | None = None,
    max_concurrency: int | None = None,
    check: bool = True,
    **toolspec_settings: Any,
) -> Any:
    """A `UserProvidedDecodingConfig` whose drafter is ToolSpec and whose resource manager holds its memory.

    tokenizer: the target's tokenizer directory (usually the model directory) or hub name; loaded in the worker.
    tools: OpenAI `tools` applied to every request; `tools_for(request)` may return a request's own list
        (None = use `tools`). TensorRT-LLM's LlmRequest does not carry the chat request's tools, so a per-request
        list must be derived from what the request does carry (e.g. `py_client_id`).
    tenant / tenant_for(request): whose retrieval memory a request reads and extends (tenants never share).
    max_concurrency: TensorRT-LLM turns speculation off above this many requests (None = always on).
    toolspec_settings: `ToolSpecConfig` fields (num_speculative_tokens = the engine's max_draft_len, memory_path,
        save_path, use_schema, ...); unknown keys raise ConfigError.
    """
    settings = ToolSpecConfig.from_mapping(toolspec_settings)
    check_max_concurrency(max_concurrency)  # before the pool loads anything
    pool = make_pool(tokenizer, settings, tools=tools, tenant=tenant, tools_for=tools_for, tenant_for=tenant_for)
    if check:
        pool.check()
    drafter = make_drafter(pool, max_draft_len=settings.num_speculative_tokens, max_concurrency=max_concurrency)
    config_class = engine_import(CONFIG_MODULE, "UserProvidedDecodingConfig")
    extra: dict[str, Any] = {} if max_concurrency is None else {"max_concurrency": max_concurrency}
    return config_class(max_draft_len=settings.num_speculative_tokens, drafter=drafter, resource_manager=pool, **extra)


def settings_from_mapping(given: Mapping[str, Any]) -> ToolSpecConfig:
    """ToolSpec settings from a JSON object (the launcher's --toolspec-config), validated."""
    if not isinstance(given, Mapping):
        raise ConfigError("toolspec-config", given, "a JSON object of ToolSpec settings", method=METHOD)
    return ToolSpecConfig.from_mapping(given)
