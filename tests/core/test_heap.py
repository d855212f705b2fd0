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
    blocks = [ctypes.create_string_buffer(64 << 10) for _ in range(64)]  # 4 MiB in arena-sized blocks
    held = heap.heap_stats()
    assert held["in_use_mib"] >= before["in_use_mib"] + 3.5  # other threads of this process move it far less
    del blocks
    assert isinstance(heap.trim(), bool)
    assert heap.heap_stats()["rss_mib"] > 0


def test_the_trace_thread_writes_json_lines_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(heap.TRACE_ENV, raising=False)
    assert heap.start_trace_from_env() is None
    monkeypatch.setenv(heap.TRACE_ENV, str(tmp_path / "trace"))
    monkeypatch.setenv(heap.INTERVAL_ENV, "0.05")
    monkeypatch.setenv(heap.OBJECTS_ENV, "2")  # every other line counts objects
    thread = heap.start_trace_from_env()
    assert thread is not None
    deadline = time.monotonic() + 5
    files: list[Path] = []
    while time.monotonic() < deadline:
        files = list(tmp_path.glob("trace.*"))
        if files and len(files[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    thread.stop()
    assert not thread.is_alive()
    first, second = (json.loads(text) for text in files[0].read_text().splitlines()[:2])
    assert {"t_s", "rss_mib", "in_use_mib", "free_mib", "mmapped_mib"} <= first.keys()
    assert first["objects"]["function"] > 0 and "objects" not in second


def test_trimming_returns_what_the_arenas_keep_after_a_free() -> None:
    """The serving pattern in small: 50 MiB of arena blocks freed stay resident (free, not in use) until a trim."""
    import ctypes

    blocks = [ctypes.create_string_buffer(64 << 10) for _ in range(800)]
    pinned = blocks[-1]  # a live block above the freed ones: the heap top cannot simply shrink
    del blocks
    kept = heap.heap_stats()
    assert kept["free_mib"] >= 40
    assert heap.trim()
    assert heap.heap_stats()["rss_mib"] <= kept["rss_mib"] - 30
    del pinned


def test_the_step_hook_trims_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "trim", lambda: calls.append(1) or True)
    off = heap.HeapTrimmer(0)
    assert not off.maybe_trim() and not calls
    trimmer = heap.HeapTrimmer(0.05)
    monkeypatch.setattr(heap, "TRIMMER", trimmer)
    heap.specplug_on_step(None, None)
    assert not calls  # not before the first interval has passed
    time.sleep(0.06)
    heap.specplug_on_step(None, None)
    heap.specplug_on_step(None, None)
    assert len(calls) == 1 and trimmer.trims == 1


def test_the_heap_plugin_is_registered_with_the_core() -> None:
    from specplug.core.plugin_manager import create_plugin_manager

    pm = create_plugin_manager(load_entry_points=False)
    assert any(impl.plugin is heap for impl in pm.hook.specplug_on_step.get_hookimpls())
