"""Tokenizer fixtures for the ToolSpec tests (the tokenizers themselves: toolspec_cases.py)."""

from __future__ import annotations

import pytest

from .toolspec_cases import load_tokenizer


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session", params=["smollm2-135m", "gemma3-270m", "tiny-bpe"])
def any_tokenizer(request):
    return load_tokenizer(request.param)
