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
from specplug.core.proposers.prompt_lookup import lookup
from specplug.core.types import PAD_TOKEN, DraftBatch


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
