"""`specplug bench run --constrain required|named`: tool calls under vLLM's structured outputs, the same in every
arm (harness checks with the stand-in engine of conftest.py; the schema itself from vLLM's own function)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


def _with_tools(dataset: str):
    import dataclasses

    from specplug.bench.workload import Workload

    plain = Workload(dataset, ["a", "b"], [[1, 2], [3, 4]], [[9, 9]], [0], tokenizer_path="x")
    return dataclasses.replace(plain, tools=[TOOLS, TOOLS], warmup_tools=[TOOLS])


def test_the_constraint_reaches_every_arm_and_the_report(bench, stand_in, tmp_path: Path) -> None:
    bench.workloads["bfcl:multi_turn"] = _with_tools("bfcl:multi_turn")
    engine, out = stand_in(), tmp_path / "out"
    argv = ["--dataset", "bfcl:multi_turn", "--arms", "ar,ngram", "--constrain", "required", "--out", str(out)]
    assert bench(engine, *argv) == 0
    assert engine.settings.constrain == "required" and engine.order == ["ar", "ngram"]
    assert json.loads((out / "results.json").read_text())["constrain"] == "required"
    assert 'tool_choice: "required"' in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--dataset", "mtbench", "--constrain", "required"], "carry no tools"),
        (["--dataset", "bfcl:multi_turn", "--engine", "reference", "--constrain", "named"], "reference"),
    ],
)
def test_a_constraint_that_cannot_hold_stops_before_any_arm(bench, stand_in, capsys, argv, fragment) -> None:
    bench.workloads["bfcl:multi_turn"] = _with_tools("bfcl:multi_turn")
    engine = stand_in()
    assert bench(engine, *argv) == 2
    assert fragment in capsys.readouterr().err and engine.calls == []


@pytest.mark.vllm
def test_the_schema_is_what_vllms_server_constrains_with() -> None:
    pytest.importorskip("vllm")
    from specplug.bench.vllm_worker import constraint_schema

    required = constraint_schema("required", TOOLS)
    assert required["type"] == "array" and required["minItems"] == 1
    assert {json.dumps(alt["properties"]["name"]) for alt in required["items"]["anyOf"]} == {
        json.dumps({"type": "string", "enum": [name]}) for name in ("get_weather", "get_time")
    }
    assert constraint_schema("named", TOOLS) == TOOLS[0]["function"]["parameters"]
    with pytest.raises(ValueError, match="required or named"):
        constraint_schema("auto", TOOLS)
