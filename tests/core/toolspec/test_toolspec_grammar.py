"""The tool-call state machine forces exactly what the schema allows, for three tokenizers and four formats."""

from __future__ import annotations

import json

import pytest

from specplug.core.errors import ConfigError
from specplug.core.toolspec.formats import FORMATS, detect_format
from specplug.core.toolspec.grammar import CallTracker, normalize_schema, tool_call_grammar, tool_functions, vocabulary

from .toolspec_cases import TOOLS


def _tracker(tokenizer, fmt, tools=TOOLS) -> CallTracker:
    vocab = vocabulary(tokenizer)
    return CallTracker(vocab, tool_call_grammar(tools, fmt, vocab.special_tokens), fmt, tokenizer.decode)


def _answer(fmt) -> str:
    def call(name, args):
        return json.dumps({"name": name, fmt.arguments_key: args})

    weather = call("get_weather", {"city": "Paris", "unit": "celsius"})
    trip = call("book_trip", {"route": {"from": "Oslo", "to": "Bergen"}, "seats": 2, "tags": ["a", "b"]})
    if fmt.tagged:  # two calls with text between them, one with nested arguments
        return f"Sure. {fmt.begin}{weather}{fmt.end} and {fmt.begin}{trip}{fmt.end}"
    if fmt.name == "json":
        return f"[{weather}, {trip}]"
    return trip


def _walk(tokenizer, fmt):
    """(position, forced tokens, legal tokens) at every position of the canonical tokenization of the answer."""
    ids = tokenizer.encode(_answer(fmt), add_special_tokens=False)
    tracker = _tracker(tokenizer, fmt)
    for i in range(len(ids)):
        tracker.advance(ids[:i])
        yield ids, i, tracker.forced(), tracker
    tracker.advance(ids)
    assert tracker.on_schema


@pytest.mark.parametrize("fmt_name", list(FORMATS))
def test_forced_tokens_are_the_answer_and_the_only_legal_text(any_tokenizer, fmt_name) -> None:
    fmt = FORMATS[fmt_name]
    forced_positions = same_tokens = 0
    for ids, i, forced, tracker in _walk(any_tokenizer, fmt):
        if not forced:
            continue
        text = any_tokenizer.decode(forced)
        # The forced text is the answer's next text; its tokens are llguidance's canonical split of it, which
        # is nearly always the tokenizer's own (a different split only costs acceptance, never correctness).
        assert any_tokenizer.decode(ids[i:]).startswith(text), f"forced text diverges from the answer at {i}"
        forced_positions += 1
        same_tokens += ids[i : i + len(forced)] == forced
        for token in tracker.legal_tokens():  # every legal next token agrees with the forced text
            piece = any_tokenizer.decode([token])
            assert text.startswith(piece) or piece.startswith(text), (i, text, piece)
    # keys, quotes, braces, tool-name and enum tails: many positions inside calls are forced
    assert forced_positions >= 10
    assert same_tokens >= 0.9 * forced_positions


def test_forced_segments_are_the_schema_text(smollm2_tokenizer) -> None:
    fmt = FORMATS["hermes"]
    tok = smollm2_tokenizer
    tracker = _tracker(tok, fmt, tools=TOOLS[:2])
    prefix = tok.encode("Sure. <tool_call>", add_special_tokens=False)
    tracker.advance(prefix)
    assert tok.decode(tracker.forced()) == '{"name": "get_'  # common prefix of get_weather/get_time, then a choice
    tracker.advance(prefix + tok.encode('{"name": "get_weather', add_special_tokens=False))
    assert tok.decode(tracker.forced()) == '", "arguments": {"city":'  # city is required and declared first
    text = 'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c'
    tracker.advance(tok.encode(text, add_special_tokens=False))
    assert tok.decode(tracker.forced()) == 'elsius"}}</tool_call'  # the only enum value with c, the last key


def test_schema_legality_of_a_wrong_key_and_a_wrong_name(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    tracker = _tracker(tok, FORMATS["hermes"])
    tracker.advance(tok.encode('<tool_call>{"name": "', add_special_tokens=False))
    assert tracker.legal_prefix(tok.encode("get_weather", add_special_tokens=False)) == 3
    assert tracker.legal_prefix(tok.encode("delete_all", add_special_tokens=False)) == 0
    before = tracker.forced()
    pushed = tracker.push(tok.encode("get_weather", add_special_tokens=False))
    tracker.pop(pushed)
    assert tracker.forced() == before  # tentative drafts leave the state as it was


def test_off_schema_call_is_skipped_and_the_next_call_is_forced_again(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    fmt = FORMATS["hermes"]
    tracker = _tracker(tok, fmt)
    bad = '<tool_call>{"name": "get_weather", "arguments": {"town": "Paris"}}</tool_call> then '
    tracker.advance(tok.encode(bad, add_special_tokens=False))
    assert tracker.on_schema and tracker.off_schema_events == 1  # re-armed after the closing tag
    tracker.advance(tok.encode(bad + "<tool_call>", add_special_tokens=False))
    assert tok.decode(tracker.forced()) == '{"name": "'
    inside = tok.encode('<tool_call>{"name": "nope", "a', add_special_tokens=False)
    tracker2 = _tracker(tok, fmt)
    tracker2.advance(inside)
    assert not tracker2.on_schema and tracker2.forced() == [] and tracker2.legal_prefix([1, 2, 3]) == 3


def test_no_tools_still_forces_the_call_structure(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    tracker = _tracker(tok, FORMATS["hermes"], tools=None)
    tracker.advance(tok.encode('<tool_call>{"name": "anything', add_special_tokens=False))
    tracker.advance(tok.encode('<tool_call>{"name": "anything"', add_special_tokens=False))
    assert tok.decode(tracker.forced()) == ', "arguments":'  # then ` {"` or ` {}`: a choice of tokens


def test_python_type_names_and_descriptions_are_normalized() -> None:
    schema = normalize_schema(
        {
            "type": "dict",
            "description": "dropped",
            "properties": {"x": {"type": "float", "default": 1}, "t": {"type": "tuple", "items": {"type": "any"}}},
            "required": ["x", "ghost"],
        }
    )
    assert schema == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "t": {"type": "array", "items": {}}},
        "required": ["x"],
        "additionalProperties": False,
    }


def test_bad_tools_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"tools\[1\]"):
        tool_functions([{"name": "ok"}, {"function": {"description": "no name"}}])


def test_format_detection_from_chat_templates() -> None:
    assert detect_format("{{ '<tool_call>\\n' + tool_call | tojson + '\\n</tool_call>' }}").name == "hermes-nl"
    assert detect_format("<|python_tag|>").name == "llama3"
    assert detect_format(None).name == "hermes"


@pytest.mark.parametrize("fmt_name", [name for name, fmt in FORMATS.items() if fmt.tagged])
def test_free_text_shortcut_forces_what_the_matcher_forces(any_tokenizer, fmt_name) -> None:
    """Between calls `forced()` answers from `is_accepting()` without asking for forced tokens; at every position of
    an answer with prose around two calls it must equal llguidance's own `compute_ff_tokens`."""
    fmt = FORMATS[fmt_name]
    shortcuts = 0
    for _, _, forced, tracker in _walk(any_tokenizer, fmt):
        assert forced == list(tracker._matcher.compute_ff_tokens())
        shortcuts += tracker._matcher.is_accepting()
    assert shortcuts >= 5  # the prose before, between and after the calls took the shortcut


def test_requests_with_one_tool_set_share_a_compilation_but_never_a_matcher_state(smollm2_tokenizer) -> None:
    """The grammar is compiled once per tool set (requests start from copies): a request that advanced leaves the
    next one at the start, and what each forces equals a tracker over a fresh compilation."""
    from specplug.core.toolspec import grammar as g
    from specplug.core.toolspec.formats import FORMATS

    fmt = FORMATS["hermes"]
    ids = smollm2_tokenizer.encode(_answer(fmt), add_special_tokens=False)
    g._MATCHERS.clear()
    first = _tracker(smollm2_tokenizer, fmt)
    assert len(g._MATCHERS) == 1
    first.advance(ids[:12])
    second = _tracker(smollm2_tokenizer, fmt)
    assert len(g._MATCHERS) == 1  # no second compilation for the same tools
    g._MATCHERS.clear()
    fresh = _tracker(smollm2_tokenizer, fmt)
    for i in (0, 5, 12, 20):
        second.advance(ids[:i])
        fresh.advance(ids[:i])
        assert second.forced() == fresh.forced(), i
        assert second.legal_prefix(ids[i:]) == fresh.legal_prefix(ids[i:]) == len(ids) - i
    first.advance(ids[:20])
    assert first.legal_prefix(ids[20:]) == len(ids) - 20


def test_the_compiled_grammar_cache_is_bounded(smollm2_tokenizer, monkeypatch) -> None:
    from specplug.core.toolspec import grammar as g
    from specplug.core.toolspec.formats import FORMATS

    monkeypatch.setattr(g, "_MATCHERS_MAX", 2)
    g._MATCHERS.clear()
    fmt = FORMATS["hermes"]
    for name in ("a_tool", "b_tool", "c_tool"):
        tools = [{"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}]
        _tracker(smollm2_tokenizer, fmt, tools)
    assert len(g._MATCHERS) == 2
