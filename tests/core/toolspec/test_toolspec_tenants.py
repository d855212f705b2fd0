"""Tenants stay apart (issue 21, part 2), with every draft source ON — token recycling included.

What a request is drafted is a timing side channel (the output is the target's own, but acceptance and latency
reveal whether the drafts matched), so nothing learned from one tenant's outputs may ever draft for another, for
the anonymous tenant (`""`: a request nothing the deployment controls names) nothing is shared at all, and no
number of new tenants can push an established one out.
"""

from __future__ import annotations

from specplug.core.toolspec.config import ToolSpecConfig
from specplug.core.toolspec.drafter import ToolSpecDrafter

SECRET = "Bob writes: my bank PIN is 4417 and my password is hunter2.\n"
BOB_PROMPT = "Notes.\n" + 2 * SECRET + "Bob writes: my"
BOB_ANSWER = " bank PIN is 4417 and my password is hunter2.\n" + SECRET
ALICE_PROMPT = "Notes.\nAlice writes: my"


def _drafter(tokenizer, **settings) -> ToolSpecDrafter:
    return ToolSpecDrafter(ToolSpecConfig.from_mapping({"tool_format": "hermes", **settings}), tokenizer)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _serve(drafter: ToolSpecDrafter, rid: str, prompt: list[int], answer: list[int], tenant: str) -> None:
    """An engine's view of one request: a draft before every committed token, then the finish."""
    drafter.start_request(rid, prompt, tenant=tenant)
    for i in range(len(answer) + 1):
        drafter.draft(rid, prompt + answer[:i])
    drafter.finish_request(rid, token_ids=prompt + answer)


def _drafts(drafter: ToolSpecDrafter, rid: str, prompt: list[int], answer: list[int], tenant: str) -> list[list[int]]:
    """Every chain drafted for a request that commits `answer`."""
    drafter.start_request(rid, prompt, tenant=tenant)
    chains = [drafter.draft(rid, prompt + answer[:i]) for i in range(len(answer) + 1)]
    drafter.finish_request(rid, token_ids=prompt + answer)
    return chains


def _leaks(tokenizer, chains: list[list[int]]) -> list[str]:
    texts = [tokenizer.decode(chain) for chain in chains if chain]
    return [t for t in texts if any(word in t for word in ("4417", "hunter", "password", "PIN"))]


def test_the_pin_and_password_case_no_cross_tenant_draft_with_recycling_on(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok)
    assert drafter.config.use_recycling and drafter.config.use_retrieval and drafter.config.use_schema
    bob_prompt, bob_answer = _encode(tok, BOB_PROMPT), _encode(tok, BOB_ANSWER)
    alice_prompt = _encode(tok, ALICE_PROMPT)
    alice_answer = _encode(tok, " cat is called Tom and my dog is called Rex.")  # her own text

    def alice_after(serve_bob: bool) -> list[list[int]]:
        drafter = _drafter(tok)
        _serve(drafter, "alice-0", alice_prompt, alice_answer[:1], "alice")  # she learns from her own answer
        if serve_bob:
            _serve(drafter, "bob-0", bob_prompt, bob_answer, "bob")
        return _drafts(drafter, "alice-1", alice_prompt, alice_answer, "alice")

    alone, after = alice_after(serve_bob=False), alice_after(serve_bob=True)
    assert _leaks(tok, after) == [], [tok.decode(c) for c in after]
    assert after == alone  # non-interference: what alice is drafted does not depend on bob's traffic
    _serve(drafter, "bob-0", bob_prompt, bob_answer, "bob")
    # The very context of the report ("Alice writes: my") drafts nothing of bob's, from any source.
    drafter.start_request("alice-2", alice_prompt, tenant="alice")
    assert drafter.draft("alice-2", alice_prompt) == []
    # ... while bob himself is drafted his own line: the memories are there, only not for alice.
    drafter.start_request("bob-1", bob_prompt, tenant="bob")
    assert "password is hunter2" in tok.decode(drafter.draft("bob-1", bob_prompt + bob_answer[:6]))


def test_anonymous_requests_share_nothing_but_keep_their_own_context(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok)
    bob_prompt, bob_answer = _encode(tok, BOB_PROMPT), _encode(tok, BOB_ANSWER)
    alice_prompt = _encode(tok, ALICE_PROMPT)
    _serve(drafter, "anon-0", bob_prompt, bob_answer, "")  # an anonymous request commits the secret
    # Another anonymous request (same anonymous "tenant") with the same words in its context gets nothing of it.
    drafter.start_request("anon-1", alice_prompt, tenant="")
    assert drafter.draft("anon-1", alice_prompt) == []
    context = alice_prompt + _encode(tok, " bank PIN is")
    assert _leaks(tok, [drafter.draft("anon-1", context)]) == []
    drafter.finish_request("anon-1")
    # A named tenant gets nothing of it either.
    drafter.start_request("alice", alice_prompt, tenant="alice")
    assert drafter.draft("alice", alice_prompt) == []
    # Own-context prompt lookup still drafts: a request repeating its own prompt's line.
    drafter.start_request("anon-2", bob_prompt, tenant="")
    assert "hunter2" in tok.decode(drafter.draft("anon-2", bob_prompt + _encode(tok, " bank PIN is 4417")))
    assert drafter.bank.tenants() == []  # the anonymous tenant has no memory at all (alice has learned nothing yet)


def test_flooding_with_new_tenants_cannot_evict_an_established_tenant(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    drafter = _drafter(tok, use_schema=False, recycling_max_tokens=16)  # recycling extends the retrieved chain
    max_tenants = drafter.config.memory_max_tenants
    prompt, answer = _encode(tok, "Q"), _encode(tok, "alpha beta gamma delta epsilon zeta eta theta iota")
    _serve(drafter, "alice-0", prompt, answer, "alice")
    flood = _encode(tok, "alpha beta gamma omega omega omega")
    for i in range(max_tenants + 10):  # as many made-up tenants as the bank holds, and more
        _serve(drafter, f"mallory-{i}", prompt, flood, f"mallory-{i}")
    drafter.start_request("alice-1", prompt, tenant="alice")
    rest = answer[3:]
    assert drafter.draft("alice-1", prompt + answer[:3], budget=len(rest)) == rest  # her memory, her recycling
    assert "alice" in drafter.bank.tenants() and len(drafter.bank.tenants()) <= max_tenants
    drafter.finish_request("alice-1")
