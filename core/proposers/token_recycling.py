"""Token Recycling (Luo et al. 2024), ToolSpec's fallback drafter: every token remembers the target's top-k next
tokens from the last time the target scored a position that followed it, so the target's own past predictions
become drafts at no model cost.

The table is updated in one vectorized step per verify pass (`observe_logits`). Engines that expose only the
tokens they committed (vLLM's custom proposer) use `observe_committed`: under greedy decoding a committed token is
the target's arg-max after its predecessor, i.e. exactly the table's top-1 entry for that predecessor, so chain
drafting (which follows top-1) loses nothing; the lower ranks then stay as the last logits update left them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from specplug.core.errors import ConfigError

EMPTY = -1


class TokenRecycling:
    def __init__(self, vocab_size: int, top_k: int = 8) -> None:
        if vocab_size < 1:
            raise ConfigError("vocab_size", vocab_size, "an integer >= 1", method="toolspec")
        self.vocab_size, self.top_k = vocab_size, top_k
        self.table = np.full((vocab_size, top_k), EMPTY, dtype=np.int64)

    def observe_logits(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """`tokens` [N]: the input token at each scored position; `logits` [N, V]: the target's scores there."""
        if tokens.numel() == 0:
            return
        k = min(self.top_k, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices.to("cpu", torch.int64).numpy()
        rows = tokens.to("cpu", torch.int64).numpy()
        rows, top = _last_per_row(rows, top)
        keep = rows < self.vocab_size
        self.table[rows[keep], :k] = top[keep]

    def observe_committed(self, tokens: Sequence[int]) -> None:
        """Greedy output tokens: each token's successor becomes its predecessor's top-1 candidate."""
        if len(tokens) < 2:
            return
        seq = np.asarray(tokens, dtype=np.int64)
        prev, nxt = _last_per_row(seq[:-1], seq[1:])
        keep = (prev < self.vocab_size) & (prev >= 0)
        self.table[prev[keep], 0] = nxt[keep]

    def candidates(self, token: int) -> list[int]:
        """The remembered next tokens after `token`, best first (empty if never observed)."""
        if not 0 <= token < self.vocab_size:
            return []
        row = self.table[token]
        return [int(t) for t in row[row != EMPTY]]


def _last_per_row(rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the last value written for each row (an update in sequence order, without duplicate-index races)."""
    _, first_in_reversed = np.unique(rows[::-1], return_index=True)
    last = len(rows) - 1 - first_in_reversed
    return rows[last], values[last]
