"""Fixtures for the TensorRT-LLM ToolSpec adapter tests: the fake `tensorrt_llm` (stand-ins, see fake_trtllm.py)
and SmolLM2's real tokenizer (from specplug's offline asset cache)."""

from __future__ import annotations

import pytest

from .fake_trtllm import install


@pytest.fixture(scope="session")
def model_dir() -> str:
    from specplug.assets import resolve_model

    return str(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def fake_trtllm(monkeypatch: pytest.MonkeyPatch):
    """The stand-in `tensorrt_llm` package (1.2-line Drafter signature), removed after the test."""
    return install(monkeypatch)
