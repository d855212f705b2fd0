"""Token Recycling (Luo et al. 2024), ToolSpec's fallback drafter: every token remembers the target's top-k next
tokens from the last time the target scored a position that followed it, so the target's own past predictions
become drafts at no model cost.

The table learns in one vectorized top-k per verify pass (`observe_logits`). Engines that expose only the tokens
they committed (vLLM's custom proposer) use `observe_committed`: under greedy decoding a committed token is the
target's arg-max after its predecessor, i.e. exactly the table's top-1 entry for that predecessor, so chain
drafting (which follows top-1) loses nothing; the lower ranks then stay as the last logits update left them.

What the table holds is learned from text (the outputs it observed), so a table is private to whoever's text it
learned from: ToolSpec keeps one per tenant and one per anonymous request, never one for everybody. Rows are
stored sparsely (a tenant's table holds only the tokens it has seen) and bounded: at most `max_rows` rows, the
least recently written row of the same table giving way, so one table never grows past its own bound and never
touches another's.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from specplug.core.errors import ConfigError

EMPTY = -1
FIRST_ROWS = 16  # rows allocated up front; the array doubles up to `max_rows`


class TokenRecycling:
    def __init__(self, vocab_size: int, top_k: int = 8, max_rows: int | None = None) -> None:
        if vocab_size < 1:
            raise ConfigError("vocab_size", vocab_size, "an integer >= 1", method="toolspec")
        if max_rows is not None and max_rows < 1:
            raise ConfigError("recycling_rows_per_tenant", max_rows, "an integer >= 1", method="toolspec")
        self.vocab_size, self.top_k = vocab_size, top_k
        self.max_rows = vocab_size if max_rows is None else min(max_rows, vocab_size)
        self._slots: OrderedDict[int, int] = OrderedDict()  # token -> row of `_table`, least recently written first
        self._table = np.full((min(FIRST_ROWS, self.max_rows), top_k), EMPTY, dtype=np.int32)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._slots)

    def observe_logits(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """`tokens` [N]: the input token at each scored position; `logits` [N, V]: the target's scores there."""
        if tokens.numel() == 0:
            return
        k = min(self.top_k, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices.to("cpu", torch.int64).numpy()
        rows = tokens.to("cpu", torch.int64).numpy()
        rows, top = _last_per_row(rows, top)
        keep = (rows < self.vocab_size) & (rows >= 0)
        for token, best in zip(rows[keep].tolist(), top[keep], strict=True):
            slot = self._slot(token)  # first: a new row may grow `_table`
            self._table[slot, :k] = best

    def observe_committed(self, tokens: Sequence[int]) -> None:
        """Greedy output tokens: each token's successor becomes its predecessor's top-1 candidate."""
        # A plain loop, in sequence order (a later transition overwrites an earlier one): engines hand over a few
        # tokens per step, where numpy's per-call overhead (np.unique) cost more than the updates themselves.
        for token, successor in itertools.pairwise(tokens):
            token = int(token)
            if 0 <= token < self.vocab_size:
                slot = self._slot(token)  # first: a new row may grow `_table`
                self._table[slot, 0] = int(successor)

    def put(self, token: int, candidates: Sequence[int]) -> None:
        """Set `token`'s candidates, best first (at most `top_k` kept)."""
        slot = self._slot(int(token))
        row = self._table[slot]
        row[:] = EMPTY
        values = [int(c) for c in candidates][: self.top_k]
        row[: len(values)] = values

    def candidates(self, token: int) -> list[int]:
        """The remembered next tokens after `token`, best first, each once (empty if never observed)."""
        slot = self._slots.get(token) if 0 <= token < self.vocab_size else None
        if slot is None:
            return []
        found: list[int] = []
        for value in self._table[slot].tolist():
            if value != EMPTY and value not in found:
                found.append(value)
        return found

    def _slot(self, token: int) -> int:
        """`token`'s row, made the most recently written; a new token gets a cleared row (the least recently written
        one of this table when it is full)."""
        slot = self._slots.get(token)
        if slot is not None:
            self._slots.move_to_end(token)
            return slot
        if len(self._slots) < self.max_rows:
            slot = len(self._slots)
            if slot == len(self._table):
                grown = np.full((min(2 * len(self._table), self.max_rows), self.top_k), EMPTY, dtype=np.int32)
                grown[: len(self._table)] = self._table
                self._table = grown
        else:
            _, slot = self._slots.popitem(last=False)
            self.evicted += 1
        self._table[slot] = EMPTY
        self._slots[token] = slot
        return slot


def _last_per_row(rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the last value written for each row (an update in sequence order, without duplicate-index races)."""
    _, first_in_reversed = np.unique(rows[::-1], return_index=True)
    last = len(rows) - 1 - first_in_reversed
    return rows[last], values[last]
