"""CSD's Online Correction Memory: how often each (draft token, target token) rejection pair has been seen.

Counts live in a hash map keyed by `draft << 32 | target` (updates touch only the few distinct pairs of one verify
step). The verifier never walks that map: it asks for a sorted int64 tensor of the pairs whose count is at
least m (`keys_at_least(m)`) and tests membership for the whole batch with one `torch.isin`. That tensor is
rebuilt only when some pair crosses m, which stops happening once the frequent pairs are known.

Bounded: past `max_pairs` the least frequent pairs are evicted (ties: the least recently seen, then the smallest
key), down to 7/8 of the bound so eviction is amortized. The frequent pairs, the ones CSD rescues with, stay.
Updates take a lock, so concurrent observers (many requests, many threads) never lose a count.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

KEY_SHIFT = 32
MAX_TOKEN_ID = (1 << 31) - 1
EVICT_TO = 7 / 8


def pair_keys(draft: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """int64 keys of (draft, target) pairs, elementwise."""
    return (draft.to(torch.int64) << KEY_SHIFT) | target.to(torch.int64)


def _split(key: int) -> tuple[int, int]:
    return key >> KEY_SHIFT, key & ((1 << KEY_SHIFT) - 1)


class CorrectionMemory:
    """Rejection-pair counts with a size bound; safe to update from several threads."""

    def __init__(self, max_pairs: int = 1_000_000) -> None:
        if max_pairs < 1:
            raise ValueError(f"max_pairs must be ≥ 1, got {max_pairs}")
        self.max_pairs = max_pairs
        self._counts: dict[int, int] = {}
        self._last_seen: dict[int, int] = {}
        self._clock = 0
        self._lock = threading.Lock()
        self._eligible: dict[int, torch.Tensor | None] = {}  # min count → cached sorted keys (None = stale)
        self._on_device: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}  # (m, device) → (cpu, copy)
        self.observations = 0  # total mismatches counted (evicted ones included)
        self.evictions = 0

    # --- updates -----------------------------------------------------------------------------------------

    def observe(self, draft: torch.Tensor, target: torch.Tensor) -> None:
        """Count one rejection per element: draft[i] was proposed where the target chose target[i]."""
        if draft.shape != target.shape:
            raise ValueError(f"draft and target shapes differ: {tuple(draft.shape)} vs {tuple(target.shape)}")
        if draft.numel() == 0:
            return
        keys, times = torch.unique(pair_keys(draft.reshape(-1), target.reshape(-1)).cpu(), return_counts=True)
        self.add_counts(keys.tolist(), times.tolist())

    def add_counts(self, keys: Iterable[int], amounts: Iterable[int]) -> None:
        """Add `amounts` to the counts of `keys` (one call = one step on the recency clock)."""
        with self._lock:
            self._clock += 1
            counts, last, watched = self._counts, self._last_seen, self._eligible
            for key, amount in zip(keys, amounts, strict=True):
                old = counts.get(key, 0)
                new = old + amount
                counts[key] = new
                last[key] = self._clock
                self.observations += amount
                if watched:
                    held = self._base_count(key)  # a pair's count is what a base holds plus this memory's own
                    for m in watched:
                        if old + held < m <= new + held:
                            watched[m] = None
            if len(counts) > self.max_pairs:
                self._evict(max(1, int(self.max_pairs * EVICT_TO)))

    def _evict(self, keep: int) -> None:
        keys = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
        counts = np.fromiter(self._counts.values(), dtype=np.int64, count=len(keys))
        seen = np.fromiter((self._last_seen[k] for k in keys.tolist()), dtype=np.int64, count=len(keys))
        # lexsort sorts by the last key first: count, then recency, then key — ascending, so victims come first.
        order = np.lexsort((keys, seen, counts))
        victims = order[: len(keys) - keep]
        floor = int(counts[victims].max()) if len(victims) else 0
        for key in keys[victims].tolist():
            del self._counts[key]
            del self._last_seen[key]
        self.evictions += len(victims)
        for m in self._eligible:
            if m <= floor:
                self._eligible[m] = None

    # --- queries -----------------------------------------------------------------------------------------

    def keys_at_least(self, min_count: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Sorted int64 keys of the pairs counted at least `min_count` times (cached until one crosses it).

        With a `device`, the copy there is cached too, so an accelerator does not receive the set every step.
        """
        with self._lock:
            cached = self._eligible.get(min_count)
            if cached is None:
                cached = self._eligible_tensor(min_count)
                self._eligible[min_count] = cached
            if device is None or torch.device(device) == cached.device:
                return cached
            slot = (min_count, str(device))
            found = self._on_device.get(slot)
            if found is None or found[0] is not cached:
                found = self._on_device[slot] = (cached, cached.to(device))
            return found[1]

    def _eligible_tensor(self, min_count: int) -> torch.Tensor:
        """Sorted keys counted at least `min_count` times (called with the lock held)."""
        return torch.tensor(sorted(k for k, c in self._counts.items() if c >= min_count), dtype=torch.int64)

    def _base_count(self, key: int) -> int:
        """What a read-only base adds to `key`'s count (none here; `core.csd.tenants.TenantMemory` has one)."""
        del key
        return 0

    def counts(self, draft: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Current count of each (draft[i], target[i]) pair (0 when never seen or evicted)."""
        keys = pair_keys(draft, target)
        with self._lock:
            values = [self._counts.get(k, 0) for k in keys.reshape(-1).tolist()]
        return torch.tensor(values, dtype=torch.int64).reshape(keys.shape)

    def top(self, n: int) -> list[tuple[int, int, int]]:
        """The n most frequent pairs as (draft, target, count), most frequent first."""
        with self._lock:
            return self._ranked()[:n]

    def _ranked(self) -> list[tuple[int, int, int]]:
        """Every pair, most frequent first (ties: smaller key first). Call with the lock held."""
        items = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(*_split(k), c) for k, c in items]

    def __len__(self) -> int:
        return len(self._counts)

    def total(self) -> int:
        """Sum of the counts held now (observations minus evicted counts)."""
        with self._lock:
            return sum(self._counts.values())

    # --- data form (persistence) ---------------------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """Plain lists, most frequent first, so a truncated reader would still see the useful pairs."""
        with self._lock:
            ranked = self._ranked()
            return {
                "max_pairs": self.max_pairs,
                "draft": [d for d, _, _ in ranked],
                "target": [t for _, t, _ in ranked],
                "count": [c for _, _, c in ranked],
                "observations": self.observations,
                "evictions": self.evictions,
            }

    @classmethod
    def from_data(cls, data: Mapping[str, Any], max_pairs: int | None = None) -> CorrectionMemory:
        """Inverse of `to_data`; raises ValueError on malformed data (callers turn it into a file error)."""
        draft, target, count = data.get("draft"), data.get("target"), data.get("count")
        if not all(isinstance(v, list) for v in (draft, target, count)) or not len(draft) == len(target) == len(count):
            raise ValueError("pairs must be three lists of equal length (draft, target, count)")
        ints = [*draft, *target, *count]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            raise ValueError("pair entries must be integers")
        if any(not 0 <= v <= MAX_TOKEN_ID for v in [*draft, *target]) or any(c < 1 for c in count):
            raise ValueError("token ids must be in [0, 2^31) and counts ≥ 1")
        memory = cls(max_pairs if max_pairs is not None else int(data.get("max_pairs", 1_000_000)))
        keys = [(d << KEY_SHIFT) | t for d, t in zip(draft, target, strict=True)]
        if len(set(keys)) != len(keys):
            raise ValueError("a pair appears twice")
        memory.add_counts(keys, count)
        memory.observations = int(data.get("observations", memory.observations))
        memory.evictions = int(data.get("evictions", 0))
        return memory
