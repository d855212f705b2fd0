"""A batched KV cache whose rows advance at different speeds.

Speculative decoding commits a different number of tokens per row each step, and rejected draft tokens are
already in the cache. Instead of copying caches, every row appends the same number of slots per forward; slots
holding padding or rejected tokens are masked out (attention mask 0) and never attended again. Positions come
from each row's count of valid tokens, so RoPE sees the same positions as plain decoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = torch.nonzero(torch.as_tensor(a[:n]) != torch.as_tensor(b[:n]))
    return int(diff[0, 0]) if diff.numel() else n


class SlotCache:
    """KV cache of one model for a fixed batch of rows."""

    def __init__(self, model: torch.nn.Module, batch_size: int) -> None:
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.mask = torch.zeros((batch_size, 0), dtype=torch.int64)
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self.slots: list[list[int]] = [[] for _ in range(batch_size)]

    def sync(self, contexts: Sequence[Sequence[int] | None]) -> list[list[int]]:
        """Forget cached tokens that left each row's context; return what each row still has to feed.

        The last context token is always returned (its logits are what the caller wants next). A row whose
        context is None feeds nothing this step.
        """
        feeds: list[list[int]] = []
        for row, context in enumerate(contexts):
            if context is None:
                feeds.append([])
                continue
            keep = min(common_prefix(self.tokens[row], context), len(context) - 1)
            dropped = self.slots[row][keep:]
            if dropped:
                self.mask[row, dropped] = 0
                del self.tokens[row][keep:], self.slots[row][keep:]
            feeds.append(list(context[keep:]))
        return feeds

    @torch.no_grad()
    def extend(self, feeds: Sequence[Sequence[int]]) -> torch.Tensor:
        """One forward over each row's new tokens (padded to the longest); returns logits [B, T, V] in fp32."""
        batch = len(feeds)
        width = max(1, max(len(f) for f in feeds))
        ids = torch.zeros((batch, width), dtype=torch.int64)
        valid = torch.zeros((batch, width), dtype=torch.int64)
        for row, feed in enumerate(feeds):
            ids[row, : len(feed)] = torch.as_tensor(feed, dtype=torch.int64)
            valid[row, : len(feed)] = 1
        lengths = torch.tensor([len(t) for t in self.tokens], dtype=torch.int64)
        positions = lengths.unsqueeze(1) + torch.arange(width).unsqueeze(0)
        start = self.mask.shape[1]
        self.mask = torch.cat([self.mask, valid], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        for row, feed in enumerate(feeds):
            self.tokens[row].extend(feed)
            self.slots[row].extend(range(start, start + len(feed)))
        return out.logits.float()
