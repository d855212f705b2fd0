"""Prompt lookup: the tokens that followed the latest earlier occurrence of the context's last n tokens.

numpy only, no torch: ToolSpec's retrieval uses it and is imported by the engine bootstraps, which must load in an
environment without torch (the wheel check in `.ci/run`).
"""

from __future__ import annotations

import numpy as np


def lookup(context: np.ndarray, n_min: int, n_max: int, k: int) -> np.ndarray:
    """Tokens that followed the latest earlier match of the last n tokens (n from n_max down to n_min).

    Vectorized over the earlier occurrences of the last token: each candidate's match is extended backwards one
    position per step (at most n_max steps), so the cost is O(occurrences × n_max), not O(length × n) per n.
    """
    length = len(context)
    if length < 2 or n_max < 1:
        return context[:0]
    ends = np.flatnonzero(context[: length - 1] == context[-1]) + 1  # a match ends there; a continuation follows
    if not ends.size:
        return context[:0]
    matched = np.ones(len(ends), dtype=np.int64)
    alive = np.ones(len(ends), dtype=bool)
    for back in range(1, min(n_max, length - 1)):
        before = ends - 1 - back
        alive &= before >= 0
        alive[alive] &= context[before[alive]] == context[length - 1 - back]
        matched += alive
        if not alive.any():
            break
    best = int(matched.max())
    if best < n_min:
        return context[:0]
    start = int(ends[np.flatnonzero(matched == best)[-1]])  # the latest of the longest matches
    return context[start : start + k]
