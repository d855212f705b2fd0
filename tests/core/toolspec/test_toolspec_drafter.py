"""The drafter: sources in order, budget, no side effects, trees, tenants, the no-self-match rule."""

from __future__ import annotations

import pytest

from specplug.core.errors import ConfigError
from specplug.core.toolspec.config import ToolSpecConfig
from specplug.core.toolspec.drafter import ToolSpecDrafter, _trie

from .toolspec_cases import TOOLS

ANSWER = 'Sure.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>'


def _drafter(tokenizer, **settings) -> ToolSpecDrafter:
    return ToolSpecDrafter(ToolSpecConfig.from_mapping({"tool_format": "hermes", **settings}), tokenizer)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _replay(drafter, tokenizer, rid: str, prompt: list[int], answer: list[int]) -> tuple[int, int]:
    """Greedy verification against a known answer: (steps, accepted draft tokens)."""
    steps = accepted = i = 0
    while i < len(answer):
        draft = drafter.draft(rid, prompt + answer[:i])
        n = 0
        while n < len(draft) and i + n < len(answer) and draft[n] == answer[i + n]:
            n += 1
        steps, accepted, i = steps + 1, accepted + n, i + n + 1
    return steps, accepted


def test_schema_drafts_then_memory_drafts_after_the_answer_is_remembered(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok)
    prompt, answer = _encode(tok, "Weather in Paris?"), _encode(tok, ANSWER)
    drafter.start_request("a", prompt, tools=TOOLS)
    cold_steps, cold_accepted = _replay(drafter, tok, "a", prompt, answer)
    assert drafter.drafted["schema"] > 10 and cold_accepted > 0
    drafter.finish_request("a")
    drafter.start_request("b", prompt, tools=TOOLS)
    warm_steps, _ = _replay(drafter, tok, "b", prompt, answer)
    assert drafter.drafted["memory"] > 0 and warm_steps < cold_steps


def test_budget_and_no_side_effects(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok, num_speculative_tokens=4)
    prompt = _encode(tok, "Weather?")
    drafter.start_request("r", prompt, tools=TOOLS)
    context = prompt + _encode(tok, "<tool_call>")
    first = drafter.draft("r", context)
    assert 0 < len(first) <= 4
    assert drafter.draft("r", context) == first  # drafting consumed nothing
    assert drafter.draft("r", context, budget=2) == first[:2]
    assert drafter.draft("r", context, budget=0) == []


def test_tree_first_path_is_the_chain_and_it_branches_after_forced_tokens(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok, num_speculative_tokens=10, tree_width=3, retrieval="lookup")  # recency ranks answers
    prompt = _encode(tok, "Weather?")
    for rid in ("x", "y"):  # two remembered answers that differ in the city
        drafter.start_request(rid, prompt, tools=TOOLS)
        drafter.draft(rid, prompt + _encode(tok, ANSWER.replace("Paris", "Oslo" if rid == "x" else "Rome")))
        drafter.finish_request(rid)
    drafter.start_request("r", prompt, tools=TOOLS)
    context = prompt + _encode(tok, 'Sure.<tool_call>{"name": "get_weather", "arguments": {"city": "')
    chain = drafter.draft("r", context)
    tokens, parents = drafter.draft_tree("r", context)
    assert len(tokens) <= 10 and all(p < i for i, p in enumerate(parents))
    head = next((i for i, p in enumerate(parents) if p != i - 1), len(parents))  # nodes of the first path
    assert head >= 1 and tokens[:head] == chain[:head]
    roots = [t for t, p in zip(tokens, parents, strict=True) if p == -1]
    assert len(roots) <= 3  # tree_width
    assert [tok.decode([t]) for t in roots[:2]] == ["Rome", "Os"]  # the most recent answer first, then the other


def test_trie_merges_prefixes_within_budget() -> None:
    assert _trie([[1, 2, 3], [1, 2, 4], [5]], 10) == ([1, 2, 3, 4, 5], [-1, 0, 1, 1, -1])
    assert _trie([[1, 2, 3], [1, 9, 9]], 4) == ([1, 2, 3, 9], [-1, 0, 1, 0])


def test_tenants_do_not_draft_from_each_other(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok, use_schema=False, use_recycling=False)
    prompt, answer = _encode(tok, "Q"), _encode(tok, "alpha beta gamma delta epsilon zeta eta theta")
    drafter.start_request("a", prompt, tenant="alice")
    drafter.draft("a", prompt + answer)
    drafter.finish_request("a")
    half = prompt + answer[:4]
    drafter.start_request("b", prompt, tenant="bob")
    assert drafter.draft("b", half) == []
    drafter.start_request("c", prompt, tenant="alice")
    chain = drafter.draft("c", half)  # as long as the match allows (suffix decoding's adaptive length)
    assert chain and chain == answer[4 : 4 + len(chain)]


def test_own_context_lookup_never_returns_the_trivial_self_match(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok, use_schema=False, use_recycling=False, match_min=2)
    context = _encode(tok, "one two three four five six")
    drafter.start_request("r", context[:2])
    assert drafter.draft("r", context) == []  # the suffix occurs only as itself
    repeated = context + context[:3]
    assert drafter.draft("r", repeated)[:3] == context[3:6]


def test_recycled_candidates_must_be_schema_legal(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok, use_retrieval=False, recycling_max_tokens=1)
    prompt = _encode(tok, "Q")
    drafter.start_request("r", prompt, tools=TOOLS)
    context = prompt + _encode(tok, '<tool_call>{"name": "')
    bogus = _encode(tok, "delete")[0]
    drafter.recycling_of("r").put(context[-1], [bogus, _encode(tok, "get")[0]])
    assert drafter.draft("r", context, budget=1) == _encode(tok, "get")[:1]


def test_errors_are_clear(smollm2_tokenizer) -> None:
    with pytest.raises(ConfigError, match="match_max"):
        ToolSpecConfig(match_min=5, match_max=3)
    with pytest.raises(ConfigError, match="tool_format"):
        ToolSpecConfig.from_mapping({"tool_format": "xml"})
    with pytest.raises(ConfigError, match="one of"):
        ToolSpecConfig.from_mapping({"num_speculative_token": 4})
    drafter = _drafter(smollm2_tokenizer)
    with pytest.raises(KeyError, match="not started"):
        drafter.draft("missing", [1, 2])
    with pytest.raises(ConfigError, match="function name"):
        drafter.start_request("r", [1], tools=[{"type": "function", "function": {}}])


def test_selected_through_the_plugin_hooks(smollm2_tokenizer) -> None:
    from specplug.core.plugin_manager import create_plugin_manager
    from specplug.core.toolspec.memory import InvocationMemoryBank

    pm = create_plugin_manager(load_entry_points=False)
    drafter = pm.hook.specplug_make_proposer(
        method="toolspec", config={"tokenizer": smollm2_tokenizer, "num_speculative_tokens": 4}, session=None
    )
    assert isinstance(drafter, ToolSpecDrafter) and drafter.config.num_speculative_tokens == 4
    assert isinstance(pm.hook.specplug_make_memory(kind="invocation", config={}, session=None), InvocationMemoryBank)
    with pytest.raises(ConfigError, match="tokenizer"):
        pm.hook.specplug_make_proposer(method="toolspec", config={}, session=None)


@pytest.mark.parametrize("retrieval", ["suffix", "lookup"])
def test_numpy_rows_of_an_engine_buffer_draft_as_lists_do(smollm2_tokenizer, retrieval) -> None:
    """vLLM's slot hands a proposer with `accepts_arrays` views of its token buffer, which it overwrites next step:
    the drafts equal those from list contexts, and what the drafter keeps (the answer it remembers) is a copy."""
    import numpy as np

    tok = smollm2_tokenizer
    prompt, answer = _encode(tok, "Weather in Paris?"), _encode(tok, ANSWER)
    by_list, by_rows = _drafter(tok, retrieval=retrieval), _drafter(tok, retrieval=retrieval)
    assert ToolSpecDrafter.accepts_arrays
    buffer = np.zeros(len(prompt) + len(answer) + 8, dtype=np.int32)
    for drafter in (by_list, by_rows):
        drafter.start_request("a", prompt, tools=TOOLS, tenant="t")
    for i in range(len(answer) + 1):
        context = prompt + answer[:i]
        buffer[: len(context)] = context
        expected, got = by_list.draft("a", context), by_rows.draft("a", buffer[: len(context)])
        assert got == expected and all(type(t) is int for t in got)
    buffer[:] = 7  # the engine reuses its buffer
    for drafter in (by_list, by_rows):
        drafter.finish_request("a")
    assert by_rows.bank.to_data() == by_list.bank.to_data() and by_list.bank.tenants() == ["t"]
