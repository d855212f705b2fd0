"""make_speculative_config against the stand-in UserProvidedDecodingConfig (fake_trtllm.py).

What these prove: the config TensorRT-LLM receives carries ToolSpec's drafter (a Drafter subclass), its pool
(a BaseResourceManager subclass) and the draft length; and every bad input fails at the call, in the caller's
process, with a message naming the setting: unknown or out-of-range settings, bad tools, unusable per-request
hooks, a missing tokenizer, and a missing, corrupt or tampered memory file.
"""

from __future__ import annotations

import json

import pytest

from specplug.core.errors import ConfigError
from specplug.plugins.trtllm_toolspec import make_speculative_config as lazily_exported
from specplug.plugins.trtllm_toolspec.config import make_speculative_config

from .cases import TOOLS, tools_by_client
from .fake_trtllm import BaseResourceManager, DrafterMaxDraftLen, UserProvidedDecodingConfig


def test_the_config_carries_drafter_pool_and_draft_length(fake_trtllm, model_dir):
    spec = make_speculative_config(model_dir, tools=TOOLS, tenant="acme", num_speculative_tokens=5, max_concurrency=8)

    assert isinstance(spec, UserProvidedDecodingConfig)
    assert (spec.max_draft_len, spec.max_total_draft_tokens, spec.max_concurrency) == (5, 5, 8)
    assert isinstance(spec.drafter, DrafterMaxDraftLen) and isinstance(spec.resource_manager, BaseResourceManager)
    assert spec.drafter.pool is spec.resource_manager
    assert (spec.drafter.max_draft_len, spec.drafter.max_concurrency) == (5, 8)
    pool = spec.resource_manager
    assert (pool.tools, pool.tenant, pool.config.num_speculative_tokens) == (TOOLS, "acme", 5)
    assert lazily_exported is make_speculative_config


@pytest.mark.parametrize(
    ("kwargs", "setting", "hint"),
    [
        ({"num_speculative_token": 4}, "num_speculative_token", "num_speculative_tokens"),  # a typo
        ({"num_speculative_tokens": 0}, "num_speculative_tokens", "[1, 256]"),
        ({"tool_format": "xml"}, "tool_format", "hermes"),
        ({"use_schema": "yes"}, "use_schema", "true or false"),
        ({"tools": {"type": "function"}}, "tools", "list of OpenAI tool objects"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools", "function name"),
        ({"tenant": ""}, "tenant", "non-empty"),
        ({"tools_for": "not callable"}, "tools_for", "callable"),
        ({"tools_for": lambda request: None}, "tools_for", "picklable"),
        ({"tenant_for": lambda request: "x"}, "tenant_for", "picklable"),
        ({"max_concurrency": 0}, "max_concurrency", "positive"),
    ],
)
def test_bad_settings_are_refused_at_the_call(fake_trtllm, model_dir, kwargs, setting, hint):
    with pytest.raises(ConfigError) as caught:
        make_speculative_config(model_dir, **kwargs)
    assert caught.value.setting == setting
    assert hint in str(caught.value)


def test_a_missing_tokenizer_is_refused_at_the_call(fake_trtllm, tmp_path):
    with pytest.raises(ConfigError, match="tokenizer") as caught:
        make_speculative_config(str(tmp_path / "nothing"))
    assert caught.value.setting == "tokenizer"


def _saved_memory(model_dir, path) -> None:
    spec = make_speculative_config(model_dir, save_path=str(path))
    spec.resource_manager.core.bank.add("default", list(range(10, 30)))
    spec.resource_manager.save()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("missing", "cannot read it"),
        ("truncated", "not a complete JSON document"),
        ("tampered", "checksum mismatch"),
        ("foreign", "not a specplug data file"),
    ],
)
def test_a_bad_memory_file_is_refused_at_the_call(fake_trtllm, model_dir, tmp_path, damage, reason):
    path = tmp_path / "memory.json"
    if damage != "missing":
        _saved_memory(model_dir, path)
        text = path.read_text()
        if damage == "truncated":
            path.write_text(text[: len(text) // 2])
        elif damage == "tampered":
            document = json.loads(text)
            document["payload"]["tenants"]["default"][0][0] = 99
            path.write_text(json.dumps(document))
        else:
            path.write_text(json.dumps({"some": "other file"}))

    with pytest.raises(ConfigError) as caught:
        make_speculative_config(model_dir, tools=TOOLS, memory_path=str(path))
    assert caught.value.setting == "memory_path"
    assert reason in str(caught.value) and str(path) in str(caught.value)


def test_a_good_memory_file_loads_at_the_call(fake_trtllm, model_dir, tmp_path):
    path = tmp_path / "memory.json"
    _saved_memory(model_dir, path)
    spec = make_speculative_config(model_dir, tools_for=tools_by_client, memory_path=str(path))
    assert spec.resource_manager.core.bank.summary()["answers"] == 1
