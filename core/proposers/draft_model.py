"""Draft-model proposer: a smaller causal LM sharing the target's tokenizer drafts k tokens per row.

Returns log q of every drafted token and the full draft distributions (what rejection sampling and SMC need).
Greedy drafting (temperature 0) gives q as a one-hot. The draft's KV cache is a SlotCache, so each propose call
feeds only the tokens the draft has not seen (the last committed ones) plus k − 1 single-token steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from specplug.core.errors import ConfigError
from specplug.core.types import DraftBatch


class DraftModelProposer:
    name = "draft_model"

    def __init__(
        self, model: torch.nn.Module, num_speculative_tokens: int = 4, temperature: float = 0.0, seed: int = 0
    ) -> None:
        if num_speculative_tokens < 1:
            raise ConfigError("num_speculative_tokens", num_speculative_tokens, "an integer >= 1", method=self.name)
        if temperature < 0:
            raise ConfigError("temperature", temperature, ">= 0 (0 = greedy drafting)", method=self.name)
        self.model, self.k, self.temperature = model, num_speculative_tokens, float(temperature)
        self.generator = torch.Generator().manual_seed(seed)
        self._cache = None

    def start_batch(self, batch_size: int) -> None:
        """Begin a new batch of sequences (drops the draft's cache)."""
        from specplug.reference.slot_cache import SlotCache

        self._cache = SlotCache(self.model, batch_size)

    def _distribution(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature == 0:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).double()
        return torch.softmax(logits.double() / self.temperature, dim=-1)

    def propose(
        self, contexts: Sequence[Sequence[int]], active: Sequence[bool] | None = None, **_: object
    ) -> DraftBatch:
        if self._cache is None or len(self._cache.tokens) != len(contexts):
            self.start_batch(len(contexts))
        active = list(active) if active is not None else [True] * len(contexts)
        feeds = self._cache.sync([c if a else None for c, a in zip(contexts, active, strict=True)])
        batch = len(contexts)
        last = torch.tensor([max(len(f), 1) - 1 for f in feeds])
        tokens, log_q, probs = [], [], []
        for _ in range(self.k):
            logits = self._cache.extend(feeds)
            dist = self._distribution(logits[torch.arange(batch), last])
            token = torch.multinomial(dist, 1, generator=self.generator).squeeze(1)
            tokens.append(token)
            log_q.append(dist.gather(1, token.unsqueeze(1)).squeeze(1).log())
            probs.append(dist)
            feeds = [[int(t)] if a else [] for t, a in zip(token, active, strict=True)]
            last = torch.zeros(batch, dtype=torch.int64)
        counts = torch.tensor([self.k if a else 0 for a in active], dtype=torch.int64)
        return DraftBatch(
            tokens=torch.stack(tokens, 1), num_tokens=counts, log_q=torch.stack(log_q, 1), probs=torch.stack(probs, 1)
        )
