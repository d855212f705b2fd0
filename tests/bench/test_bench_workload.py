"""Dataset names with a split or category (bfcl:single_turn, bfcl:simple_python) pick the right records."""

from __future__ import annotations

from pathlib import Path

import pytest

from specplug.bench import workload
from specplug.bench.workload import split_dataset


def test_split_dataset(tmp_path: Path) -> None:
    assert split_dataset("bfcl:single_turn") == ("bfcl", "single_turn")
    assert split_dataset("mtbench") == ("mtbench", None)
    assert split_dataset("nosuch:thing") == ("nosuch:thing", None)  # not a known dataset: left alone
    odd = tmp_path / "bfcl:x.jsonl"
    odd.write_text("")
    assert split_dataset(str(odd)) == (str(odd), None)


@pytest.mark.parametrize(
    ("dataset", "call"),
    [
        ("bfcl:single_turn", {"split": "single_turn", "limit": 5}),
        ("bfcl:simple_python", {"category": "simple_python", "limit": 5}),
        ("humaneval", {"limit": 5}),
    ],
)
def test_loading_routes_splits_and_categories(monkeypatch, dataset: str, call: dict) -> None:
    seen = []
    monkeypatch.setattr("specplug.assets.load_dataset", lambda name, **kw: seen.append((name, kw)) or [])
    workload._load(dataset, 5)
    assert seen == [(dataset.partition(":")[0], call)]
