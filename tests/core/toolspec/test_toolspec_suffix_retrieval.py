"""ToolSpec's suffix-tree retrieval (issue 20): the drafts ArcticInference's SuffixDecodingCache gives for the same
tree state (vLLM's `suffix` method), one cache per tenant (nothing crosses tenants), the trees rebuilt from a
saved memory and evicted with it, and the pure-Python fallback with its adaptive length."""

from __future__ import annotations

import random

import pytest

from specplug.core.errors import ConfigError
from specplug.core.toolspec import retrieval
from specplug.core.toolspec.config import ToolSpecConfig
from specplug.core.toolspec.drafter import ToolSpecDrafter
from specplug.core.toolspec.memory import InvocationMemoryBank
from specplug.core.toolspec.retrieval import own_match

suffix_decoding = pytest.importorskip("arctic_inference.suffix_decoding", reason="bash scripts/install-suffix.sh")

K = 12
SECRET = [901, 902, 903, 904, 905, 906, 907, 908, 909, 910]  # only tenant "alice" ever commits these


def _drafter(tokenizer, **settings) -> ToolSpecDrafter:
    given = {"tool_format": "hermes", "num_speculative_tokens": K, "use_schema": False, "use_recycling": False}
    return ToolSpecDrafter(ToolSpecConfig.from_mapping({**given, **settings}), tokenizer)


def _serve(drafter: ToolSpecDrafter, rid: str, prompt: list[int], answer: list[int], tenant: str) -> list[list[int]]:
    """An engine's view of one request: a draft before every committed token, then the finish; the drafts."""
    drafter.start_request(rid, prompt, tenant=tenant)
    chains = [drafter.draft(rid, prompt + answer[:i]) for i in range(len(answer) + 1)]
    drafter.finish_request(rid, token_ids=prompt + answer)
    return chains


def _sequences(seed: int) -> list[tuple[list[int], list[int]]]:
    """(prompt, answer) pairs over a small alphabet with shared phrases, so matches of every length, branching
    continuations of different frequencies and long repeats all occur."""
    rng = random.Random(seed)
    phrases = [[rng.randrange(10, 40) for _ in range(rng.randrange(3, 9))] for _ in range(6)]

    def text(parts: int) -> list[int]:
        out: list[int] = []
        for _ in range(parts):
            out += rng.choice(phrases) if rng.random() < 0.7 else [rng.randrange(10, 40)]
        return out

    return [(text(6), text(8)) for _ in range(6)]


@pytest.mark.parametrize("trees", ["one cache", "two caches"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drafts_equal_suffix_decoding_cache_speculate_on_the_same_trees(
    smollm2_tokenizer, monkeypatch, seed: int, trees: str
) -> None:
    """ "one cache": a tenant's request drafts from its tenant's cache alone (its own tree is there too); "two
    caches": the path for an arctic-inference whose trees are not exposed (its private cache, then the tenant's)."""
    if trees == "two caches":
        monkeypatch.setattr(retrieval.SuffixTrees, "speculate_each", lambda *a, **k: None)
    drafter = _drafter(smollm2_tokenizer)
    assert drafter.suffix is not None and drafter.bank.suffix is not None
    reference = suffix_decoding.SuffixDecodingCache(max_tree_depth=24, max_cached_requests=-1)
    checked = adaptive = 0
    for n, (prompt, answer) in enumerate(_sequences(seed)):
        rid = f"r{n}"
        drafter.start_request(rid, prompt, tenant="t")
        reference.start_request(rid, prompt)
        for i in range(len(answer) + 1):
            context = prompt + answer[:i]
            if i:
                reference.add_active_response(rid, answer[i - 1 : i])
            want = reference.speculate(rid, context[-24:], max_spec_tokens=K, max_spec_factor=1.0, min_token_prob=0.1)
            got = drafter.draft(rid, context)
            assert got == want.token_ids, (n, i)
            checked += bool(got)
            adaptive += 0 < len(got) < K
        drafter.finish_request(rid, token_ids=prompt + answer)
        reference.stop_request(rid)
    assert checked > 10 and adaptive > 5  # drafts were made, and their length followed the match


@pytest.mark.parametrize("trees", ["one cache", "two caches"])
def test_an_earlier_answer_drafts_as_memory_and_the_own_prompt_as_context(
    smollm2_tokenizer, monkeypatch, trees: str
) -> None:
    if trees == "two caches":
        monkeypatch.setattr(retrieval.SuffixTrees, "speculate_each", lambda *a, **k: None)
    drafter = _drafter(smollm2_tokenizer)
    prompt, answer = [1, 2, 3], [50, 51, 52, 53, 54, 55, 56, 57, 58, 59]
    _serve(drafter, "a", prompt, answer, "t")
    drafter.drafted.clear()
    own_prompt = [7, 8, 9, 50, 51, 52, 53, 54, 60]
    drafter.start_request("b", own_prompt, tenant="t")
    assert drafter.draft("b", [*own_prompt, 50, 51, 52]) == [53, 54, 60]  # equal scores: the own prompt wins
    assert drafter.draft("b", [*own_prompt, 50, 51, 52, 53, 54, 55, 56]) == [57, 58, 59]  # only the earlier answer
    assert drafter.drafted["context"] == 3 and drafter.drafted["memory"] == 3


def test_no_tenant_drafts_another_tenants_answers(smollm2_tokenizer) -> None:
    prompt, lead = [5, 6, 7], [20, 21, 22, 23]
    bob_answer = [*lead, 30, 31, 32, 33, 34, 35]

    def bob_drafts(alice_first: bool, **settings) -> list[list[int]]:
        drafter = _drafter(smollm2_tokenizer, **settings)
        if alice_first:
            _serve(drafter, "alice-0", prompt, [*lead, *SECRET], "alice")
        _serve(drafter, "bob-0", prompt, bob_answer, "bob")
        drafts = _serve(drafter, "bob-1", prompt, [*lead, *SECRET[:3]], "bob")
        drafts += _serve(drafter, "anon", prompt, [*lead, *SECRET[:3]], "")
        drafts += _serve(drafter, "claimed", prompt, [*lead, *SECRET[:3]], "claimed:alice")
        return drafts

    alone, after = bob_drafts(alice_first=False), bob_drafts(alice_first=True)
    assert after == alone  # what bob, the anonymous and the claimed requests are drafted ignores alice
    leaked = [d for d in after if set(d) & set(SECRET[3:])]  # beyond what each request itself committed
    assert leaked == []
    # A tenant refused by a full bank shares nothing either.
    refused = _drafter(smollm2_tokenizer, memory_max_tenants=1)
    _serve(refused, "alice-0", prompt, [*lead, *SECRET], "alice")
    assert not [d for d in _serve(refused, "mallory", prompt, lead, "mallory") if set(d) & set(SECRET)]
    assert refused.bank.tenants() == ["alice"]
    # ... while alice herself is drafted her own answer.
    refused.start_request("alice-1", prompt, tenant="alice")
    assert refused.draft("alice-1", [*prompt, *lead, *SECRET[:4]])[:3] == SECRET[4:7]


def test_unremembered_answers_leave_the_tenant_tree(smollm2_tokenizer) -> None:
    drafter = _drafter(smollm2_tokenizer)
    drafter.start_request("seed", [1], tenant="t")
    drafter.finish_request("seed", token_ids=[1, 2, 3, 4, 5, 6])  # establishes the tenant
    drafter.start_request("gone", [1], tenant="t")
    drafter.draft("gone", [1, 70, 71, 72, 73, 74, 75])  # in the tenant's global tree while it runs
    drafter.start_request("other", [9], tenant="t")
    assert drafter.draft("other", [9, 70, 71, 72]) == [73, 74, 75]  # as vLLM: running answers are shared
    drafter.finish_request("gone", remember=False)
    assert drafter.draft("other", [9, 70, 71, 72]) == []


def test_saved_memory_rebuilds_the_trees_and_eviction_reaches_them(smollm2_tokenizer, tmp_path) -> None:
    drafter = _drafter(smollm2_tokenizer, memory_tokens_per_tenant=25)
    first, second, third = list(range(100, 110)), list(range(200, 210)), list(range(300, 310))
    for n, answer in enumerate((first, second)):
        _serve(drafter, f"r{n}", [1], answer, "t")
    path = tmp_path / "memory.json"
    drafter.save(str(path))
    loaded = _drafter(smollm2_tokenizer, memory_tokens_per_tenant=25, memory_path=str(path))
    assert loaded.bank.to_data()["tenants"] == drafter.bank.to_data()["tenants"]
    for d in (drafter, loaded):
        d.start_request("q1", [1], tenant="t")
        assert d.draft("q1", [1, 104, 105, 106]) == [107, 108, 109]
        d.finish_request("q1", remember=False)
        d.start_request("q2", [1], tenant="t")
        assert d.draft("q2", [1, 204, 205, 206]) == [207, 208, 209]
        d.finish_request("q2", remember=False)
    _serve(loaded, "r2", [1], third, "t")  # 30 tokens > 25: the oldest answer goes, from the tree too
    loaded.start_request("q3", [1], tenant="t")
    assert loaded.draft("q3", [1, 104, 105, 106]) == []
    loaded.start_request("q4", [1], tenant="t")
    assert loaded.draft("q4", [1, 304, 305, 306]) == [307, 308, 309]


def test_lookup_fallback_is_selected_and_its_length_follows_the_match(smollm2_tokenizer, monkeypatch) -> None:
    drafter = _drafter(smollm2_tokenizer, retrieval="lookup")
    assert drafter.suffix is None and drafter.bank.suffix is None
    answer = list(range(100, 120))
    _serve(drafter, "a", [1], answer, "t")
    drafter.start_request("b", [2], tenant="t")
    assert drafter.draft("b", [2, 103, 104, 105]) == [106, 107, 108]  # a 3-token match drafts 3 tokens
    drafter.start_request("c", [2], tenant="t")
    assert drafter.draft("c", [2, *range(100, 108)]) == list(range(108, 115))  # 7 (match_max) drafts 7
    factor = _drafter(smollm2_tokenizer, retrieval="lookup", suffix_max_spec_factor=2.0)
    _serve(factor, "a", [1], answer, "t")
    factor.start_request("b", [2], tenant="t")
    assert factor.draft("b", [2, 103, 104, 105]) == list(range(106, 112))
    # "auto" without the package falls back; "suffix" without it is refused, naming the install command.
    monkeypatch.setattr(retrieval, "suffix_available", lambda: False)
    assert ToolSpecConfig(retrieval="auto").retrieval_kind == "lookup"
    assert _drafter(smollm2_tokenizer).suffix is None
    with pytest.raises(ConfigError, match=r"bash scripts/install-suffix\.sh"):
        ToolSpecConfig(retrieval="suffix")


def test_own_match_reports_the_matched_length() -> None:
    assert own_match([1, 2, 3, 4, 9, 2, 3, 4], 2, 7, 3) == (3, [9, 2, 3])
    assert own_match([5, 2, 3, 4, 9, 1, 3, 4], 2, 7, 2) == (2, [9, 1])
    assert own_match([1, 2, 3], 2, 7, 3) == (0, [])


def test_settings_are_checked(smollm2_tokenizer) -> None:
    assert ToolSpecConfig().retrieval_kind == "suffix"  # auto, with the package installed
    for bad in ({"retrieval": "tree"}, {"suffix_max_spec_factor": 0}, {"suffix_min_token_prob": 1.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ToolSpecConfig.from_mapping(bad)
    with pytest.raises(ConfigError, match="suffix_max_tree_depth"):
        ToolSpecConfig(suffix_max_tree_depth=0)
    assert ToolSpecConfig(use_retrieval=False).suffix_params is None


def test_a_bank_made_without_trees_gets_them(smollm2_tokenizer) -> None:
    bank = InvocationMemoryBank()
    bank.add("t", list(range(100, 110)))
    config = ToolSpecConfig(tool_format="hermes", num_speculative_tokens=K, use_schema=False, use_recycling=False)
    drafter = ToolSpecDrafter(config, smollm2_tokenizer, bank=bank)
    drafter.start_request("q", [1], tenant="t")
    assert drafter.draft("q", [1, 104, 105, 106]) == [107, 108, 109]
