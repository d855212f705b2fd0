"""bfcl:multi_turn_turns without the network: one record per turn, with the earlier turns' gold calls executed.

A synthetic BFCL tree (data files, func docs and stand-in backend sources at BFCL's paths) drives the real
loader and executor; test_slow_bfcl_turns.py checks the same properties on the pinned wheel.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import pytest

from specplug.assets import datasets
from specplug.assets.bfcl_exec import BACKEND_DIR, BACKEND_MODULES, backend_classes, parse_gold_call
from specplug.assets.cache import AssetError
from specplug.assets.datasets import BFCL_ADDED_FUNCTIONS_PROMPT, BFCL_CLASS_DOCS, BFCL_MULTI_TURN, PromptRecord

# A stateful stand-in for a BFCL backend; the long_context import is spelled as BFCL's modules spell it.
COUNTER_SOURCE = """
from bfcl_eval.eval_checker.multi_turn_eval.func_source_code.long_context import START


class {cls}:
    def _load_scenario(self, scenario, long_context=False):
        self.count = scenario.get("count", START) + (1000 if long_context else 0)

    def add(self, n, note=""):
        self.count += n
        return {{"count": self.count}}

    def peek(self):
        return self.count

    def fail(self):
        raise ValueError("boom")

    def today(self):
        return str(datetime.today().date())
"""
DOCS = [
    {"name": "add", "description": "Add n.", "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}}},
    {"name": "peek", "description": "Current count.", "parameters": {"type": "dict", "properties": {}}},
    {"name": "fail", "description": "Always fails.", "parameters": {"type": "dict", "properties": {}}},
]
ENTRIES = {
    "multi_turn_base": [
        {
            "id": "multi_turn_base_0",
            "question": [[{"role": "user", "content": "add 2, then 3"}], [{"role": "user", "content": "peek"}],
                         [{"role": "user", "content": "add 1"}], [{"role": "user", "content": "fail"}]],
            "initial_config": {"TwitterAPI": {"count": 10}},
            "involved_classes": ["TwitterAPI"],
        },
        {
            "id": "multi_turn_base_1",
            "question": [[{"role": "user", "content": "peek"}]],
            "initial_config": {},
            "involved_classes": ["TwitterAPI"],
        },
    ],
    "multi_turn_miss_func": [
        {
            "id": "multi_turn_miss_func_0",
            "question": [[{"role": "user", "content": "peek"}], []],
            "initial_config": {"TwitterAPI": {"count": 7}},
            "involved_classes": ["TwitterAPI"],
            "missed_function": {"1": ["peek"]},
        }
    ],
    "multi_turn_long_context": [
        {
            "id": "multi_turn_long_context_0",
            "question": [[{"role": "user", "content": "peek"}]],
            "initial_config": {},
            "involved_classes": ["TwitterAPI"],
        }
    ],
}  # fmt: skip
GOLD = {
    "multi_turn_base_0": [["add(2)", "add(n=3)"], ["peek()"], ["add(n=1, note='x')"], ["fail()"]],
    "multi_turn_base_1": [["peek()"]],
    "multi_turn_miss_func_0": [[], ["peek()"]],
    "multi_turn_long_context_0": [["peek()"]],
}


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    data = tmp_path / datasets._BFCL
    for cat in BFCL_MULTI_TURN:
        rows = ENTRIES.get(cat, [])
        _jsonl(data / f"BFCL_v4_{cat}.json", rows)
        _jsonl(
            data / f"possible_answer/BFCL_v4_{cat}.json", [{"id": r["id"], "ground_truth": GOLD[r["id"]]} for r in rows]
        )
    for cls, file in BFCL_CLASS_DOCS.items():
        _jsonl(data / "multi_turn_func_doc" / file, DOCS if cls == "TwitterAPI" else [])
    src = tmp_path / BACKEND_DIR
    src.mkdir(parents=True)
    (src / "long_context.py").write_text("START = 0\n")
    for cls, stem in BACKEND_MODULES.items():
        (src / f"{stem}.py").write_text("from datetime import datetime\n" + COUNTER_SOURCE.format(cls=cls))
    return tmp_path


def _by_id(records: list[PromptRecord]) -> dict[str, PromptRecord]:
    return {r.id: r for r in records}


def test_one_record_per_turn_in_conversation_order(tree: Path) -> None:
    records = datasets._load_bfcl_turns(tree)
    assert [r.id for r in records] == [
        *(f"multi_turn_base_0/turn{k}" for k in range(4)),
        "multi_turn_base_1/turn0",
        "multi_turn_miss_func_0/turn0",
        "multi_turn_miss_func_0/turn1",
        "multi_turn_long_context_0/turn0",
    ]
    assert all(r.dataset == "bfcl" and r.messages[-1]["role"] == "user" for r in records)
    first = records[0]
    assert first.category == "multi_turn_base" and first.messages == [{"role": "user", "content": "add 2, then 3"}]
    assert first.gold == {
        "calls": [{"name": "add", "arguments": {"n": 2}}, {"name": "add", "arguments": {"n": 3}}],
        "turn": 0,
    }
    assert first.extra["call_strings"] == ["add(2)", "add(n=3)"] and first.extra["results"] == [
        '{"count": 12}',
        '{"count": 15}',
    ]
    assert [t["function"]["name"] for t in first.tools] == ["add", "peek", "fail"]
    assert first.tools[0]["function"]["parameters"]["type"] == "object", "schemas are normalized"


def test_turn_two_holds_the_earlier_gold_calls_and_their_results(tree: Path) -> None:
    turn2 = _by_id(datasets._load_bfcl_turns(tree))["multi_turn_base_0/turn2"]
    roles = [m["role"] for m in turn2.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "user", "assistant", "tool", "user"]
    calls = [m["tool_calls"][0] for m in turn2.messages if m["role"] == "assistant"]
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("call_0", "add", {"n": 2}),
        ("call_1", "add", {"n": 3}),
        ("call_2", "peek", {}),
    ]
    results = [(m["tool_call_id"], m["name"], m["content"]) for m in turn2.messages if m["role"] == "tool"]
    assert results == [("call_0", "add", '{"count": 12}'), ("call_1", "add", '{"count": 15}'), ("call_2", "peek", "15")]
    assert turn2.gold == {"calls": [{"name": "add", "arguments": {"n": 1, "note": "x"}}], "turn": 2}


def test_backend_errors_become_results_and_state_is_per_conversation(tree: Path) -> None:
    records = _by_id(datasets._load_bfcl_turns(tree))
    assert records["multi_turn_base_0/turn3"].extra["results"] == ["Error during execution: boom"]
    assert records["multi_turn_base_1/turn0"].extra["results"] == ["0"], "a fresh backend, default scenario"
    assert records["multi_turn_long_context_0/turn0"].extra["results"] == ["1000"], "long_context scenario"


def test_a_withheld_function_appears_from_the_turn_bfcl_adds_it(tree: Path) -> None:
    records = _by_id(datasets._load_bfcl_turns(tree))
    turn0, turn1 = records["multi_turn_miss_func_0/turn0"], records["multi_turn_miss_func_0/turn1"]
    assert [t["function"]["name"] for t in turn0.tools] == ["add", "fail"]
    assert [t["function"]["name"] for t in turn1.tools] == ["add", "fail", "peek"], "appended, as BFCL does"
    assert turn0.gold["calls"] == []
    assert turn1.messages == [
        {"role": "user", "content": "peek"},
        {"role": "user", "content": BFCL_ADDED_FUNCTIONS_PROMPT},
    ]
    assert turn1.extra["results"] == ["7"]


def test_loads_are_deterministic_and_write_nothing(tree: Path, tmp_path_factory, monkeypatch) -> None:
    work = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(work)
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    assert datasets._load_bfcl_turns(tree) == datasets._load_bfcl_turns(tree)
    assert list(work.iterdir()) == []
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before, "no __pycache__ in the cache entry"


def test_the_split_loads_through_load_dataset_and_multi_turn_is_unchanged(tree: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets, "pull_dataset", lambda name, **_: tree)
    assert len(datasets.load_dataset("bfcl", split="multi_turn_turns")) == 8
    assert [r.id for r in datasets.load_dataset("bfcl", split="multi_turn_turns", category="multi_turn_miss_func")] == [
        "multi_turn_miss_func_0/turn0",
        "multi_turn_miss_func_0/turn1",
    ]
    assert len(datasets.load_dataset("bfcl", split="multi_turn_turns", limit=3)) == 3
    monkeypatch.setattr(datasets, "BFCL_SINGLE_TURN", ())
    monkeypatch.setattr(datasets, "BFCL_IRRELEVANCE", ())
    whole = datasets.load_dataset("bfcl", split="multi_turn")
    assert [r.id for r in whole] == [
        "multi_turn_base_0",
        "multi_turn_base_1",
        "multi_turn_miss_func_0",
        "multi_turn_long_context_0",
    ]
    assert whole[0].gold == {"turns": GOLD["multi_turn_base_0"]}


def test_only_travel_api_sees_a_frozen_today(tree: Path) -> None:
    classes = backend_classes(tree)
    assert classes["TravelAPI"]().today() == "2026-03-23", "its age check must not depend on the run date"
    assert sys.modules[classes["TwitterAPI"].__module__].datetime is datetime.datetime


def test_a_tree_without_backend_sources_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="pull the dataset again: specplug assets pull bfcl"):
        backend_classes(tmp_path)


def test_a_backend_with_a_missing_module_names_the_install(tree: Path) -> None:
    (tree / BACKEND_DIR / "math_api.py").write_text("import mpmath_not_installed_xyz\nclass MathAPI: pass\n")
    with pytest.raises(AssetError, match="pip install mpmath_not_installed_xyz"):
        backend_classes(tree)


@pytest.mark.parametrize(
    ("text", "name", "args", "kwargs"),
    [
        ("cd(folder='document')", "cd", (), {"folder": "document"}),
        ("sort('final_report.pdf')", "sort", ("final_report.pdf",), {}),
        ("ls(a=True)", "ls", (), {"a": True}),
        ("f(x=[1, 2.5], y={'k': None})", "f", (), {"x": [1, 2.5], "y": {"k": None}}),
    ],
)
def test_gold_call_strings_parse_without_eval(text: str, name: str, args: tuple, kwargs: dict) -> None:
    call = parse_gold_call(text)
    assert (call.name, call.args, call.kwargs) == (name, args, kwargs)


@pytest.mark.parametrize("text", ["__import__('os').system('x')", "f(x=g(1))", "a.b(1)", "f(**kw)", "f("])
def test_anything_but_a_literal_call_is_refused(text: str) -> None:
    with pytest.raises(AssetError, match="cannot read BFCL gold call"):
        parse_gold_call(text)
