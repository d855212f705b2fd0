"""Prompt lookup: the vectorized search equals the plain definition (longest n first, then the latest match)."""

from __future__ import annotations

import numpy as np
import pytest

from specplug.core.proposers.prompt_lookup import lookup


def _by_definition(context: list[int], n_min: int, n_max: int, k: int) -> list[int]:
    length = len(context)
    for n in range(min(n_max, length - 1), n_min - 1, -1):
        suffix = context[length - n :]
        for start in range(length - 1 - n, -1, -1):  # latest first; the suffix itself is not a match
            if context[start : start + n] == suffix:
                return context[start + n : start + n + k]
    return []


@pytest.mark.parametrize("vocab", [2, 3, 6])
def test_lookup_equals_the_definition_on_random_contexts(vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    for _ in range(3000):
        context = rng.integers(0, vocab, size=int(rng.integers(1, 40))).tolist()
        n_min = int(rng.integers(1, 4))
        n_max = int(rng.integers(n_min, 8))
        k = int(rng.integers(1, 6))
        got = lookup(np.asarray(context, dtype=np.int64), n_min, n_max, k).tolist()
        assert got == _by_definition(context, n_min, n_max, k), (context, n_min, n_max, k)


def test_no_trivial_self_match() -> None:
    assert lookup(np.array([1, 2, 3]), 1, 3, 2).tolist() == []
    assert lookup(np.array([1, 2, 3, 1, 2]), 2, 3, 2).tolist() == [3, 1]
