"""The heap trace tells live memory from memory glibc keeps: its numbers move the way allocations move."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from specplug.core import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="glibc's mallinfo2 is not available")


def test_in_use_follows_a_live_allocation_and_trim_runs() -> None:
    import ctypes

    before = heap.heap_stats()
    block = ctypes.create_string_buffer(100 << 10)  # below the mmap threshold: an arena allocation
    held = heap.heap_stats()
    assert held["in_use_mib"] >= before["in_use_mib"] + 0.09
    del block
    assert isinstance(heap.trim(), bool)
    assert heap.heap_stats()["rss_mib"] > 0


def test_the_trace_thread_writes_json_lines_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(heap.TRACE_ENV, raising=False)
    assert heap.start_trace_from_env() is None
    monkeypatch.setenv(heap.TRACE_ENV, str(tmp_path / "trace"))
    monkeypatch.setenv(heap.INTERVAL_ENV, "0.05")
    monkeypatch.setenv(heap.OBJECTS_ENV, "2")  # every other line counts objects
    assert heap.start_trace_from_env() is not None
    deadline = time.monotonic() + 5
    files: list[Path] = []
    while time.monotonic() < deadline:
        files = list(tmp_path.glob("trace.*"))
        if files and len(files[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    first, second = (json.loads(text) for text in files[0].read_text().splitlines()[:2])
    assert {"t_s", "rss_mib", "in_use_mib", "free_mib", "mmapped_mib"} <= first.keys()
    assert first["objects"]["function"] > 0 and "objects" not in second
