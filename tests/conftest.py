"""Shared test policy.

Engine tests skip where the engine is not installed — except where the environment says the engine must be
there (CI sets SPECPLUG_REQUIRE_ENGINES=vllm,sglang), in which case a missing engine is a failure, not a skip, so a
broken install can never turn the real-engine tests into silent skips.

SGLang is installed in CI without its CUDA dependencies (scripts/ensure-venv.sh), so "installed" is not enough
there: its tests also need the modules they use to import, and a failing import is reported with its cause.
"""

from __future__ import annotations

import functools
import importlib
import os

import pytest

from specplug.core.engines import engine_status

# Modules an engine's tests need beyond the distribution being installed.
IMPORT_PROBES = {"sglang": ("sglang.srt.plugins.hook_registry", "sglang.srt.speculative.spec_info")}


@functools.cache
def _import_problem(name: str) -> str | None:
    for module in IMPORT_PROBES.get(name, ()):
        try:
            importlib.import_module(module)
        except Exception as exc:
            return f"{name} is installed but {module} does not import ({type(exc).__name__}: {exc})"
    return None


def require_engine(name: str) -> None:
    """Skip (or fail, when required by the environment) unless engine `name` is installed and importable."""
    problem = f"{name} is not installed" if not engine_status(name).installed else _import_problem(name)
    if problem is None:
        return
    required = {e.strip() for e in os.environ.get("SPECPLUG_REQUIRE_ENGINES", "").split(",") if e.strip()}
    if name in required:
        pytest.fail(f"{problem}; it is required by SPECPLUG_REQUIRE_ENGINES")
    pytest.skip(problem)


@pytest.fixture(autouse=True)
def _engine_marks(request: pytest.FixtureRequest) -> None:
    for engine in ("vllm", "sglang"):
        if request.node.get_closest_marker(engine):
            require_engine(engine)


@pytest.fixture
def tiny_llama():
    """A factory of tiny random Llama models with a tied head (no assets, seconds on CPU): make(layers, seed)."""
    transformers = pytest.importorskip("transformers")
    import torch

    def make(layers: int = 4, seed: int = 0):
        torch.manual_seed(seed)
        config = transformers.LlamaConfig(
            vocab_size=48,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            max_position_embeddings=128,
        )
        return transformers.LlamaForCausalLM(config).eval()

    return make
