"""Prompt-lookup n-gram proposer: find the latest earlier occurrence of the context's last n tokens and
propose the k tokens that followed it (largest n first), like vLLM's `ngram` method.

Deterministic: DraftBatch.log_q is None and it pairs with the greedy verifiers. The search for one sequence is
one vectorized numpy comparison over all windows; the loop is over requests only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from specplug.core.errors import ConfigError
from specplug.core.types import PAD_TOKEN, DraftBatch


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


class NgramProposer:
    name = "ngram"

    def __init__(self, num_speculative_tokens: int = 4, prompt_lookup_min: int = 2, prompt_lookup_max: int = 4) -> None:
        if num_speculative_tokens < 1:
            raise ConfigError("num_speculative_tokens", num_speculative_tokens, "an integer >= 1", method="ngram")
        if prompt_lookup_min < 1:
            raise ConfigError("prompt_lookup_min", prompt_lookup_min, "an integer >= 1", method="ngram")
        if prompt_lookup_max < prompt_lookup_min:
            raise ConfigError(
                "prompt_lookup_max", prompt_lookup_max, f">= prompt_lookup_min ({prompt_lookup_min})", method="ngram"
            )
        self.k, self.n_min, self.n_max = num_speculative_tokens, prompt_lookup_min, prompt_lookup_max

    def propose(self, contexts: Sequence[Sequence[int]], **_: object) -> DraftBatch:
        tokens = torch.full((len(contexts), self.k), PAD_TOKEN, dtype=torch.int64)
        counts = torch.zeros(len(contexts), dtype=torch.int64)
        for row, context in enumerate(contexts):
            found = lookup(np.asarray(context, dtype=np.int64), self.n_min, self.n_max, self.k)
            tokens[row, : len(found)] = torch.from_numpy(found)
            counts[row] = len(found)
        return DraftBatch(tokens=tokens, num_tokens=counts)
