"""TensorRT-LLM adapter (headline method: ToolSpec), experimental: tested against stand-ins of TensorRT-LLM's
interface only, unverified on a real install (see docs/toolspec/trtllm.md).

TensorRT-LLM has no plugin entry point: users pass ToolSpec's drafter and its resource manager through
`UserProvidedDecodingConfig`, built by `make_speculative_config` (Python LLM API), or start the launcher
`python -m specplug.plugins.trtllm_toolspec.serve`. There is no bootstrap module. Importing this package never
imports TensorRT-LLM (nor torch): the engine classes are subclassed on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_speculative_config"]


def __getattr__(name: str) -> Any:
    if name == "make_speculative_config":
        from specplug.plugins.trtllm_toolspec.config import make_speculative_config

        return make_speculative_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
