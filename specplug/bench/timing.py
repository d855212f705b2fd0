"""The one timer of the bench's micro-measurements (`specplug bench overhead`, `specplug bench smc-report`).

`Laps` collects wall-clock laps (`with laps.lap(): ...`) and summarises them in milliseconds; `median_ms` times
one call repeatedly after a few untimed warm-up calls. Run on a quiet machine: these are CPU wall times.
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
