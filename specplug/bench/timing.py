"""The one timer of the bench's micro-measurements (`specplug bench overhead`, `specplug bench smc-report`).

`Laps` collects wall-clock laps (`with laps.lap(): ...`) and summarises them in milliseconds; `median_ms` times
one call repeatedly after a few untimed warm-up calls; `forward_ms` times one cached forward of a model (`bench
cost-curve`, the decode-step cost `draft distill` reports). Run on a quiet machine: these are CPU wall times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


class Laps:
    """Wall-clock laps, in seconds as measured, summarised in milliseconds."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    @contextmanager
    def lap(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds.append(time.perf_counter() - began)

    @property
    def mean_ms(self) -> float:
        return 1000 * statistics.fmean(self.seconds)

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.seconds)

    @property
    def p90_ms(self) -> float:
        return 1000 * float(np.percentile(self.seconds, 90))


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    laps = Laps()
    for _ in range(repeats):
        with laps.lap():
            fn()
    return laps.median_ms


def forward_ms(model: Any, positions: int, context: int, repeats: int, warmup: int = 2) -> float:
    """Median ms of one forward of a causal LM over `positions` new tokens after a cached `context` of random
    tokens (one request; the cache is rebuilt untimed before each forward, so every lap sees the same context)."""
    import torch

    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(positions)
    prefix = torch.randint(0, vocab, (1, context), generator=generator)
    new = torch.randint(0, vocab, (1, positions), generator=generator)
    laps = Laps()
    with torch.no_grad():
        for n in range(warmup + repeats):
            cache = model(prefix, use_cache=True).past_key_values
            if n < warmup:
                model(new, past_key_values=cache, use_cache=True)
                continue
            with laps.lap():
                model(new, past_key_values=cache, use_cache=True)
    return laps.median_ms
