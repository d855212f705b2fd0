"""Under an engine's JSON-schema output constraint (vLLM structured outputs, `tool_choice` "required"), the tracker
forces whole schema spans in one call, keeps following an answer spaced otherwise than `json.dumps`, never waits
for a closing tag, and the drafter drafts the forced spans (source "schema") and nothing the schema forbids."""

from __future__ import annotations

import json

import pytest

from specplug.core.toolspec.config import ToolSpecConfig
from specplug.core.toolspec.drafter import ToolSpecDrafter
from specplug.core.toolspec.formats import FORMATS
from specplug.core.toolspec.grammar import (
    CallTracker,
    constraint_grammar,
    constraint_tools,
    json_constraint,
    relaxed_grammar,
    tool_call_grammar,
    vocabulary,
)


def _tool(name: str, properties: dict, required: list[str]) -> dict:
    """One alternative of the schema vLLM's OpenAI server makes of `tool_choice: "required"` (no
    `additionalProperties`: xgrammar's strict mode closes the objects)."""
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "properties": {"name": {"type": "string", "enum": [name]}, "parameters": parameters},
        "required": ["name", "parameters"],
    }


REQUIRED = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "anyOf": [
            _tool("get_weather", {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, ["city"]),
            _tool("book_trip", {"seats": {"type": "integer"}}, ["seats"]),
        ],
    },
}
ANSWER = '[{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}]'


def _tracker(tokenizer, schema=REQUIRED, fmt=FORMATS["hermes"]) -> CallTracker:
    vocab = vocabulary(tokenizer)
    tools = constraint_tools(json.dumps(schema))
    return CallTracker(vocab, tool_call_grammar(tools, fmt, vocab.special_tokens), fmt, tokenizer.decode)


def test_constraint_rides_as_tools() -> None:
    tools = constraint_tools(json.dumps(REQUIRED))
    assert json_constraint(tools) == REQUIRED
    assert json_constraint([{"type": "function", "function": {"name": "f"}}]) is None
    assert json_constraint(constraint_tools(True)) == {"type": "object"}  # vLLM's json_object
    assert constraint_tools("{not json") is None
    assert constraint_tools({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}) is None  # no grammar


def test_strict_view_closes_objects_like_xgrammar() -> None:
    grammar = constraint_grammar(REQUIRED)
    schema = json.loads(grammar.split("%json ", 1)[1])
    for option in schema["items"]["anyOf"]:
        assert option["additionalProperties"] is False
        assert option["properties"]["parameters"]["additionalProperties"] is False
    assert "additionalProperties" not in REQUIRED["items"]["anyOf"][0]  # the caller's schema is left alone
    assert relaxed_grammar(grammar) is not None and relaxed_grammar(relaxed_grammar(grammar)) is None
    assert relaxed_grammar(tool_call_grammar(None, FORMATS["hermes"])) is None


def test_whole_forced_span_in_one_call(any_tokenizer) -> None:
    tok = any_tokenizer
    tracker = _tracker(tok)
    assert tok.decode(tracker.forced()) == '[{"name": "'  # then a choice between the two tools
    ids = tok.encode('[{"name": "get_w', add_special_tokens=False)
    tracker.advance(ids)
    assert tok.decode(tracker.forced()) == 'eather", "parameters": {"city":'
    ids = tok.encode('[{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c', add_special_tokens=False)
    tracker.advance(ids)
    assert tok.decode(tracker.forced()).startswith("elsius")  # the enum tail; its closing quote may ride in a token
    # that also spans '"}}', which a tokenizer may split several ways: then the quote is not forced on its own


def test_other_spacing_is_followed_with_any_whitespace(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    tracker = _tracker(tok)
    text = '[\n  {\n    "name": "book_trip",\n    "'
    tracker.advance(tok.encode(text, add_special_tokens=False))
    assert tracker.on_schema and tracker.off_schema_events == 1
    assert tok.decode(tracker.forced()).startswith("parameters")
    tracker.advance([])  # a rewound request starts again under the assumed layout
    assert tok.decode(tracker.forced()) == '[{"name": "'


def test_no_closing_tag_under_a_constraint(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    tracker = _tracker(tok, schema={"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]})
    assert tracker.constrained
    tracker.advance(tok.encode('{"a": "x"} </tool_call> {"a', add_special_tokens=False))
    assert not tracker.on_schema and tracker.forced() == []  # off-schema for good: the engine's JSON is done


@pytest.mark.parametrize("k", [4, 16])
def test_drafter_drafts_forced_spans_and_only_legal_text(smollm2_tokenizer, k) -> None:
    tok = smollm2_tokenizer
    drafter = ToolSpecDrafter(ToolSpecConfig(num_speculative_tokens=k, tool_format="hermes"), tok)
    prompt = tok.encode("Call a tool: " + ANSWER.replace("Paris", "Oslo"), add_special_tokens=False)
    drafter.start_request("r", prompt, tools=constraint_tools(REQUIRED), tenant="t")
    first = drafter.draft("r", prompt)
    forced = tok.encode('[{"name": "', add_special_tokens=False)
    assert first[: len(forced)] == forced[:k]
    assert drafter.drafted["schema"] >= min(k, len(forced))
    answer = tok.encode(ANSWER, add_special_tokens=False)
    vocab = vocabulary(tok)
    check = CallTracker(vocab, constraint_grammar(REQUIRED, flexible=True), FORMATS["json"], tok.decode)
    for cut in range(len(answer)):  # every draft is legal under the engine's (any-whitespace) grammar
        check.advance(answer[:cut])
        chain = drafter.draft("r", prompt + answer[:cut])
        assert check.legal_prefix(chain) == len(chain), (cut, tok.decode(chain))


def _drafter_that_remembers(tok, floor: float, cities: list[str]) -> ToolSpecDrafter:
    config = ToolSpecConfig(tool_format="hermes", retrieval="suffix", constrained_min_confidence=floor)
    drafter = ToolSpecDrafter(config, tok)
    for i, city in enumerate(cities):  # earlier answers of the tenant: the same call, a different city each time
        drafter.start_request(f"old{i}", [1, 2, 3], tools=constraint_tools(REQUIRED), tenant="t")
        answer = tok.encode(ANSWER.replace("Paris", city), add_special_tokens=False)
        drafter.finish_request(f"old{i}", output_ids=answer)
    return drafter


def test_constrained_chain_ends_where_its_guesses_get_unlikely(smollm2_tokenizer) -> None:
    """Four remembered answers differ only in the city: after the forced span up to the city the suffix trees' best
    guess has probability 1/4, so with a floor of 0.3 the chain ends at the forced span; without a floor it goes on
    guessing (and a floor never changes what is drafted before the cut)."""
    tok = smollm2_tokenizer
    cities = ["Paris", "Oslo", "Rome", "Lima"]
    prefix = tok.encode('[{"name": "get_weather", "parameters": {"city": "', add_special_tokens=False)
    chains = {}
    for floor in (0.0, 0.3):
        drafter = _drafter_that_remembers(tok, floor, cities)
        drafter.start_request("r", [1, 2, 3], tools=constraint_tools(REQUIRED), tenant="t")
        chains[floor] = drafter.draft("r", [1, 2, 3, *prefix[:-1]])  # up to `"city":`; the rest is forced or guessed
    capped, free = chains[0.3], chains[0.0]
    assert free[: len(capped)] == capped and len(free) > len(capped)
    assert tok.decode(capped).strip() == '"'  # the forced opening quote of the city, and no guess after it
    assert any(city in tok.decode(free) for city in cities)


def test_a_tenant_whose_model_spaces_json_otherwise_stops_getting_dumps_spacing_forced(smollm2_tokenizer) -> None:
    """SmolLM2 writes constrained calls as `[\\n{\\n"name": …`. "auto": a tenant's first answer starts under
    json.dumps spacing (and forces `[{"name": "`, which that model rejects); once an answer of the tenant departed
    from it, the tenant's next requests follow any whitespace (forcing nothing at the start, where a newline may
    come). Other tenants keep the assumed layout; "dumps" never switches; "any" starts there."""
    tok = smollm2_tokenizer
    spaced = tok.encode(
        '[\n{\n"name": "get_weather",\n"parameters": {\n"city": "Paris"\n}\n}\n]', add_special_tokens=False
    )

    def first_draft(drafter: ToolSpecDrafter, rid: str, tenant: str) -> str:
        drafter.start_request(rid, [1, 2, 3], tools=constraint_tools(REQUIRED), tenant=tenant)
        return tok.decode(drafter.draft(rid, [1, 2, 3]))

    auto = ToolSpecDrafter(ToolSpecConfig(tool_format="hermes", use_retrieval=False), tok)
    assert first_draft(auto, "a1", "alice").startswith('[{"name": "')
    auto.finish_request("a1", output_ids=spaced)
    assert first_draft(auto, "a2", "alice") == "["  # then whitespace or `{`: a choice, nothing more forced
    assert first_draft(auto, "b1", "bob").startswith('[{"name": "')  # learned per tenant
    auto.start_request("a3", [1, 2, 3], tools=constraint_tools(REQUIRED), tenant="alice")
    for cut in range(1, len(spaced)):  # the any-whitespace tracker follows the spaced answer to its end
        assert auto.draft("a3", [1, 2, 3, *spaced[:cut]]) is not None
    assert auto._requests["a3"].tracker.on_schema
    auto.reset_memory()  # a cold benchmark arm forgets learned layouts too
    assert first_draft(auto, "a4", "alice").startswith('[{"name": "')

    dumps = ToolSpecDrafter(ToolSpecConfig(tool_format="hermes", use_retrieval=False, constrained_layout="dumps"), tok)
    first_draft(dumps, "a1", "alice")
    dumps.finish_request("a1", output_ids=spaced)
    assert first_draft(dumps, "a2", "alice").startswith('[{"name": "')
    anywhere = ToolSpecDrafter(ToolSpecConfig(tool_format="hermes", use_retrieval=False, constrained_layout="any"), tok)
    assert first_draft(anywhere, "a1", "alice") == "["
