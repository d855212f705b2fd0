"""The correction memory: exact counts (brute-force recount, concurrent updates), eviction that keeps the
frequent pairs, and a file that round-trips and refuses truncation, tampering and foreign content."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
import torch

from specplug.core.csd.bank import CorrectionMemoryBank, prompt_digest
from specplug.core.csd.memory import CorrectionMemory
from specplug.core.persist import DataFileError, read_data_file, write_data_file


def test_counts_equal_a_brute_force_recount() -> None:
    gen = torch.Generator().manual_seed(0)
    memory, brute = CorrectionMemory(), Counter()
    for _ in range(50):
        d, t = torch.randint(0, 30, (64,), generator=gen), torch.randint(0, 30, (64,), generator=gen)
        memory.observe(d, t)
        brute.update(zip(d.tolist(), t.tolist(), strict=True))
    assert len(memory) == len(brute) and memory.total() == sum(brute.values()) == memory.observations
    got = {(d, t): c for d, t, c in memory.top(len(brute))}
    assert got == dict(brute)
    pairs = list(brute)
    d, t = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    assert memory.counts(d, t).tolist() == [brute[p] for p in pairs]
    for m in (1, 3, 5, 8):
        want = sorted((d << 32) | t for (d, t), c in brute.items() if c >= m)
        assert memory.keys_at_least(m).tolist() == want


def test_rescuable_keys_follow_threshold_crossings() -> None:
    memory = CorrectionMemory()
    one, zero = torch.tensor([7]), torch.tensor([3])
    assert memory.keys_at_least(2).numel() == 0
    memory.observe(one, zero)
    assert memory.keys_at_least(2).numel() == 0
    memory.observe(one, zero)  # crosses 2: the cached tensor must be rebuilt
    assert memory.keys_at_least(2).tolist() == [(7 << 32) | 3]


def test_concurrent_updates_lose_no_count() -> None:
    memory = CorrectionMemory()

    def worker(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for _ in range(200):
            memory.observe(torch.randint(0, 8, (16,), generator=gen), torch.randint(0, 8, (16,), generator=gen))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert memory.total() == memory.observations == 8 * 200 * 16


def test_eviction_keeps_the_most_frequent_pairs() -> None:
    memory = CorrectionMemory(max_pairs=16)
    frequent = [(i, i + 1) for i in range(8)]
    for _ in range(10):
        memory.observe(torch.tensor([d for d, _ in frequent]), torch.tensor([t for _, t in frequent]))
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):  # a long tail of one-off pairs
        memory.observe(torch.randint(100, 10_000, (3,), generator=gen), torch.randint(100, 10_000, (3,), generator=gen))
    assert len(memory) <= 16 and memory.evictions > 0
    kept = {(d, t) for d, t, _ in memory.top(16)}
    assert set(frequent) <= kept
    assert all(c == 10 for d, t, c in memory.top(8))
    # Every frequent pair stays rescuable after evictions.
    assert len(memory.keys_at_least(10)) == 8


def _bank() -> CorrectionMemoryBank:
    bank = CorrectionMemoryBank(max_pairs=100, metadata={"model": "tiny"})
    bank.memory("a").observe(torch.tensor([1, 1, 2]), torch.tensor([5, 5, 6]))
    bank.memory("b").observe(torch.tensor([9]), torch.tensor([8]))
    bank.record_calibration([[1, 2, 3], [4, 5]])
    return bank


def test_save_load_round_trips_namespaces_and_provenance(tmp_path) -> None:
    path = tmp_path / "ocm.json"
    bank = _bank()
    bank.save(path)
    loaded = CorrectionMemoryBank.load(path)
    assert loaded.namespaces() == ["a", "b"]
    assert loaded.memory("a").top(10) == bank.memory("a").top(10) == [(1, 5, 2), (2, 6, 1)]
    assert loaded.memory("b").top(10) == [(9, 8, 1)]
    assert loaded.metadata == {"model": "tiny"}
    assert loaded.overlap([[4, 5], [6], [1, 2, 3]]) == [0, 2]
    assert prompt_digest([4, 5]) in loaded.calibration_prompts
    # Namespaces stay apart: pairs of "a" are not in "b".
    assert loaded.memory("b").counts(torch.tensor([1]), torch.tensor([5])).item() == 0
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_truncated_tampered_foreign_and_future_files_are_refused(tmp_path) -> None:
    path = tmp_path / "ocm.json"
    _bank().save(path)
    raw = path.read_bytes()

    (tmp_path / "cut.json").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFileError, match="truncated or corrupt"):
        CorrectionMemoryBank.load(tmp_path / "cut.json")

    doc = json.loads(raw)
    doc["payload"]["namespaces"]["a"]["count"][0] = 1000  # an edit that keeps the file valid JSON
    (tmp_path / "edit.json").write_text(json.dumps(doc))
    with pytest.raises(DataFileError, match="checksum mismatch"):
        CorrectionMemoryBank.load(tmp_path / "edit.json")

    write_data_file(tmp_path / "other.json", "toolspec-invocation-memory", 1, {"x": 1})
    with pytest.raises(DataFileError, match="not 'csd-correction-memory'"):
        CorrectionMemoryBank.load(tmp_path / "other.json")

    write_data_file(tmp_path / "future.json", "csd-correction-memory", 99, {"namespaces": {}})
    with pytest.raises(DataFileError, match="version 99 is not supported"):
        CorrectionMemoryBank.load(tmp_path / "future.json")

    (tmp_path / "pickle.bin").write_bytes(b"\x80\x04\x95")
    with pytest.raises(DataFileError):
        CorrectionMemoryBank.load(tmp_path / "pickle.bin")
    with pytest.raises(DataFileError, match="cannot read"):
        CorrectionMemoryBank.load(tmp_path / "missing.json")

    # Valid checksum, nonsense content: still refused, with the namespace named.
    write_data_file(
        tmp_path / "bad.json", "csd-correction-memory", 1, {"namespaces": {"a": {"draft": [1], "target": []}}}
    )
    with pytest.raises(DataFileError, match="namespace 'a'"):
        CorrectionMemoryBank.load(tmp_path / "bad.json")


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ocm.json"
    _bank().save(path)
    before = path.read_bytes()
    bank = _bank()
    bank.memory("a").observe(torch.tensor([3]), torch.tensor([4]))

    def broken_replace(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("specplug.core.files.os.replace", broken_replace)
    assert bank.save_quietly(path) is False
    assert path.read_bytes() == before
    assert read_data_file(path, "csd-correction-memory", [1])[0] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_device_copies_of_the_rescuable_set_are_cached_until_it_changes() -> None:
    memory = CorrectionMemory()
    memory.observe(torch.tensor([1, 1]), torch.tensor([2, 2]))
    first = memory.keys_at_least(2, "meta")  # stands for an accelerator: no data, same caching path
    assert first.device.type == "meta" and memory.keys_at_least(2, "meta") is first
    memory.observe(torch.tensor([3, 3]), torch.tensor([4, 4]))  # a second pair crosses 2
    again = memory.keys_at_least(2, "meta")
    assert again is not first and again.shape == (2,)
    assert memory.keys_at_least(2, "cpu") is memory.keys_at_least(2)
