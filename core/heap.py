"""What this process's heap holds, from glibc, and giving back what it keeps after a free.

Resident memory that grows under load is either live objects (a leak: `in_use` grows) or freed memory that glibc
keeps in its arenas (fragmentation: `free` grows, `in_use` does not). Serving allocates tensors of many sizes
every step (logits of batch × positions × vocabulary), which is the pattern that fragments glibc arenas.
Measured under a 10-minute SMC-SD load (docs/bench/load-10min-smc): live heap flat after warm-up while the
arenas' free bytes grew ~0.2 MiB/s, which was the whole RSS growth. So every engine process trims its heap
(`malloc_trim`) from the step hook at most every `SPECPLUG_HEAP_TRIM_S` seconds (default 60; 0 turns it off),
which bounds RSS by the live heap plus one interval's retention.
`SPECPLUG_HEAP_TRACE=PATH` makes every engine process append one JSON line per interval to `PATH.<pid>`
(`SPECPLUG_HEAP_TRACE_OBJECTS=N`: every N-th line also counts live Python objects by type).
"""

from __future__ import annotations

import collections
import ctypes
import gc
import itertools
import json
import logging
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from specplug.core.hookspecs import hookimpl
from specplug.core.persist import MIB

log = logging.getLogger("specplug")
TRACE_ENV = "SPECPLUG_HEAP_TRACE"
INTERVAL_ENV = "SPECPLUG_HEAP_TRACE_INTERVAL_S"
TRIM_ENV = "SPECPLUG_HEAP_TRIM_S"
DEFAULT_TRIM_S = 60.0
OBJECTS_ENV = "SPECPLUG_HEAP_TRACE_OBJECTS"  # every N-th sample also counts live Python objects by type (slow)


def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("malloc_info", "malloc_trim", "fopen", "fclose")):
        return None
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


_LIBC = _libc()


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def _malloc_totals() -> dict[str, int]:
    """glibc's totals over all arenas (`malloc_info`; `mallinfo2` sees only the main arena, and the engine's
    threads allocate in others)."""
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        handle = _LIBC.fopen(out.name.encode(), b"w")
        if not handle:
            return {}
        try:
            _LIBC.malloc_info(0, handle)
        finally:
            _LIBC.fclose(handle)
        root = ElementTree.parse(out.name).getroot()
    totals = {"fast": 0, "rest": 0, "mmap": 0, "current": 0}
    for element in root:  # the root's own children: totals over every heap (each <heap> holds its own)
        kind = element.get("type")
        if element.tag in ("total", "system") and kind in totals:
            totals[kind] = int(element.get("size", 0))
    return totals


def heap_stats() -> dict[str, float]:
    """RSS and glibc's view of the heap in MiB: `in_use` (live), `free` (kept in arenas), `mmapped` (big chunks)."""
    stats = {"rss_mib": round(rss_mib(), 2)}
    totals = _malloc_totals() if _LIBC is not None else {}
    if totals:
        free = totals["fast"] + totals["rest"]
        stats |= {
            "in_use_mib": round((totals["current"] - free) / MIB, 2),
            "free_mib": round(free / MIB, 2),
            "mmapped_mib": round(totals["mmap"] / MIB, 2),
        }
    return stats


def trim() -> bool:
    """Give the arenas' free pages back to the system (`malloc_trim(0)`); False where glibc is not the allocator."""
    return bool(_LIBC.malloc_trim(0)) if _LIBC is not None else False


def object_counts(top: int = 15) -> dict[str, int]:
    """The most numerous garbage-collected Python object types (a growing count names a leak's owner)."""
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    return dict(counts.most_common(top))


class HeapTrace(threading.Thread):
    """The trace thread; `stop()` ends it (tests; an engine process just exits)."""

    def __init__(self, run: Any) -> None:
        super().__init__(target=run, name="specplug-heap-trace", daemon=True)
        self.stopped = threading.Event()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        self.join(timeout)


def start_trace_from_env() -> HeapTrace | None:
    """Start the heap trace thread when `SPECPLUG_HEAP_TRACE` is set (a debugging aid; off by default)."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        return None
    interval = float(os.environ.get(INTERVAL_ENV, "10"))
    objects_every = int(os.environ.get(OBJECTS_ENV, "0"))
    target = Path(f"{path}.{os.getpid()}")

    def run() -> None:
        start = time.monotonic()
        for sample in itertools.count():
            line: dict[str, Any] = {"t_s": round(time.monotonic() - start, 1), **heap_stats()}
            if objects_every and sample % objects_every == 0:
                line["objects"] = object_counts()
            try:
                with target.open("a") as f:
                    f.write(json.dumps(line) + "\n")
            except OSError as exc:  # a debugging aid never disturbs serving: it stops
                log.warning("specplug: heap trace stopped (%s)", exc)
                return
            if thread.stopped.wait(interval):
                return

    thread = HeapTrace(run)
    thread.start()
    log.info("specplug: heap trace every %.0f s to %s", interval, target)
    return thread


class HeapTrimmer:
    """Trim at most every `interval_s` seconds, from whatever thread calls `maybe_trim` (the step hook)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = time.monotonic() + interval_s
        self.trims = 0
        self.last_ms = 0.0

    def maybe_trim(self) -> bool:
        if self.interval_s <= 0 or _LIBC is None or time.monotonic() < self._next:
            return False
        start = time.monotonic()
        trim()
        self.last_ms = (time.monotonic() - start) * 1000
        self.trims += 1
        self._next = time.monotonic() + self.interval_s
        return True


def _trim_interval() -> float:
    raw = os.environ.get(TRIM_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TRIM_S
    except ValueError:
        log.warning("specplug: %s=%r is not a number of seconds; trimming every %.0f s", TRIM_ENV, raw, DEFAULT_TRIM_S)
        value = DEFAULT_TRIM_S
    return value if math.isfinite(value) else 0.0


TRIMMER = HeapTrimmer(_trim_interval())


@hookimpl
def specplug_on_step(outcome: Any, session: Any) -> None:
    """Serving's heap housekeeping rides on the step announcements every host makes (no engine code)."""
    del outcome, session
    TRIMMER.maybe_trim()
