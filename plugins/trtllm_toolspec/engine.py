"""The only door to TensorRT-LLM: every engine import goes through `engine_import`, called inside functions.

TensorRT-LLM imports its CUDA bindings at `import tensorrt_llm` and needs a GPU to build its arguments, so
importing specplug (the plugin manager, `specplug doctor`, CPU test machines) must never import it. Classes that
have to subclass an engine class (`Drafter`, `BaseResourceManager`) are therefore built on first use
(`drafter.drafter_class`, `pool.pool_class`), and a missing engine becomes one clear error there.
"""

from __future__ import annotations

import importlib
from typing import Any

INSTALL_HINT = (
    "the TensorRT-LLM ToolSpec adapter needs TensorRT-LLM with its PyTorch backend (a CUDA machine; NVIDIA's "
    "package index or an NGC TensorRT-LLM container; PyPI only has a stub)"
)


class EngineMissingError(ImportError):
    """TensorRT-LLM (or the module of it the adapter needs) cannot be imported here."""


def engine_import(module: str, name: str) -> Any:
    """`from <module> import <name>`, or EngineMissingError saying what is missing and why it is needed."""
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise EngineMissingError(f"cannot import {module}.{name} ({exc}); {INSTALL_HINT}") from exc
    except AttributeError as exc:
        raise EngineMissingError(
            f"{module} has no {name}: this TensorRT-LLM version is not one the adapter knows ({INSTALL_HINT})"
        ) from exc
