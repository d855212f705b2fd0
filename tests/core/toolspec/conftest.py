"""Tokenizer fixtures for the ToolSpec tests (the tokenizers themselves: toolspec_cases.py)."""

from __future__ import annotations

import pytest

from .toolspec_cases import load_tokenizer


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    return load_tokenizer("smollm2-135m")


# Gemma's 262k-token tokenizer comes with its model (a conversion on first use): slow tests only.
@pytest.fixture(
    scope="session", params=["smollm2-135m", pytest.param("gemma3-270m", marks=pytest.mark.slow), "tiny-bpe"]
)
def any_tokenizer(request):
    return load_tokenizer(request.param)
