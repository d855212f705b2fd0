"""Retrieval memory: continuations by longest suffix then recency, no trivial self-match, tenants apart, bounded,
persisted as checksummed data."""

from __future__ import annotations

import json

import pytest

from specplug.core.persist import DataFileError, write_data_file
from specplug.core.toolspec.memory import KIND, InvocationMemoryBank


def test_continuation_of_the_longest_matching_suffix() -> None:
    bank = InvocationMemoryBank(match_min=2, match_max=4)
    bank.add("t", [1, 2, 3, 4, 5, 6])  # older
    bank.add("t", [9, 3, 4, 7, 8])  # newer, but shares only a 2-token suffix with the query
    assert bank.continuations("t", [2, 3, 4], 2) == [[5, 6]]  # 3-token match beats the newer 2-token match
    assert bank.continuations("t", [0, 3, 4], 2) == [[7, 8]]  # equal length: the most recent answer
    assert bank.continuations("t", [0, 3, 4], 3, limit=3) == [[7, 8], [5, 6]]  # distinct continuations


def test_no_trivial_self_match_and_no_match() -> None:
    bank = InvocationMemoryBank(match_min=2, match_max=4)
    bank.add("t", [1, 2, 3, 4])
    assert bank.continuations("t", [2, 3, 4], 4) == []  # the stored answer's own tail has nothing after it
    assert bank.continuations("t", [5, 6], 4) == []
    assert bank.continuations("t", [4], 4) == []  # shorter than match_min


def test_tenants_never_see_each_other() -> None:
    bank = InvocationMemoryBank(match_min=2, match_max=4)
    bank.add("alice", [1, 2, 3, 4, 5])
    assert bank.continuations("bob", [1, 2, 3], 2) == []
    assert bank.continuations("alice", [1, 2, 3], 2) == [[4, 5]]


def test_bounded_per_tenant_oldest_first_and_index_cleaned() -> None:
    bank = InvocationMemoryBank(match_min=2, match_max=3, tokens_per_tenant=12)
    bank.add("t", [1, 2, 3, 4, 5, 6])
    bank.add("t", [7, 8, 9, 10, 11, 12])
    bank.add("t", [1, 2, 30, 40, 50])  # pushes the first answer out
    summary = bank.summary()
    assert summary["tokens"] <= 12 and summary["evicted_answers"] == 1
    assert bank.continuations("t", [1, 2], 2) == [[30, 40]]  # the evicted answer's continuation is gone
    assert bank.continuations("t", [7, 8], 2) == [[9, 10]]


def test_bounded_in_tenants_new_ones_refused_nobody_evicted() -> None:
    bank = InvocationMemoryBank(match_min=1, match_max=2, max_tenants=2)
    assert bank.add("a", [1, 2, 3]) and bank.admit("b")
    assert not bank.add("c", [1, 2, 3]) and not bank.admit("d")  # full: newcomers are refused
    assert bank.tenants() == ["a", "b"] and bank.summary()["refused_admissions"] == 2
    assert bank.continuations("a", [1], 1) == [[2]] and bank.continuations("c", [1], 1) == []
    assert bank.add("b", [1, 2, 3])  # established tenants keep learning


def test_the_anonymous_tenant_has_no_memory() -> None:
    bank = InvocationMemoryBank(match_min=1, match_max=2)
    assert not bank.admit("") and not bank.add("", [1, 2, 3])
    assert bank.tenants() == [] and bank.continuations("", [1], 1) == []


def test_save_load_round_trip(tmp_path) -> None:
    bank = InvocationMemoryBank(match_min=2, match_max=5)
    bank.add("alice", [1, 2, 3, 4, 5])
    bank.add("bob", [6, 7, 8, 9], prompt=[40, 41])
    bank.save(tmp_path / "m.json")
    loaded = InvocationMemoryBank.load(tmp_path / "m.json")
    assert loaded.to_data() == bank.to_data()
    assert loaded.overlap([[1, 2], [40, 41]]) == [1]  # the prompts it learned from, for benchmark disjointness
    assert loaded.continuations("bob", [6, 7], 2) == [[8, 9]]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw[: len(raw) // 2], "truncated or corrupt"),
        (lambda raw: raw.replace(b"[1,2,3,4,5]", b"[1,2,3,4,6]"), "checksum mismatch"),
    ],
)
def test_damaged_files_are_refused_with_the_reason(tmp_path, damage, reason) -> None:
    bank = InvocationMemoryBank(match_min=2, match_max=5)
    bank.add("alice", [1, 2, 3, 4, 5])
    path = tmp_path / "m.json"
    bank.save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataFileError, match=reason):
        InvocationMemoryBank.load(path)


def test_well_formed_file_with_bad_content_is_refused(tmp_path) -> None:
    path = tmp_path / "m.json"
    write_data_file(path, KIND, 1, {"match_min": 2, "match_max": 4, "tenants": {"a": [[1, "x"]]}})
    with pytest.raises(DataFileError, match="malformed invocation memory"):
        InvocationMemoryBank.load(path)
    write_data_file(path, "csd-correction-memory", 1, {})
    with pytest.raises(DataFileError, match="not 'toolspec-invocation-memory'"):
        InvocationMemoryBank.load(path)
    assert json.loads(path.read_text())["kind"] == "csd-correction-memory"
