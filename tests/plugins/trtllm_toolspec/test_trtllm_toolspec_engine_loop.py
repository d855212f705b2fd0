"""Lossless decoding through the stand-in TensorRT-LLM executor loop (fake_trtllm.FakeExecutor).

The stand-in target is a fixed greedy answer per request; verification is TorchSampler's greedy token match
(accept the longest matching draft prefix, then the target's own next token). Whatever ToolSpec drafts, every
request must come out exactly as the target's answer (cut at its end token or at max_new_tokens), with fewer
executor steps than tokens where the drafts are good. Requests arrive while others run, rows are shuffled every
step, and the three Drafter.__init__ variants are covered. Unverified against a real TensorRT-LLM.
"""

from __future__ import annotations

import pytest

from specplug.plugins.trtllm_toolspec.config import make_speculative_config

from .cases import PROMPT, encode, tools_by_client
from .fake_trtllm import DRAFTER_VARIANTS, FakeExecutor, FakeLlmRequest, install

ANSWERS = {
    1: ("weather", '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>'),
    2: (
        "booking",
        '<tool_call>{"name": "book_trip", "arguments": {"origin": "Oslo", "destination": "Rome"}}</tool_call>',
    ),
    3: (None, "The weather in Paris is mild today. The weather in Paris is mild today, as it often is."),
    4: (
        "weather",
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Lyon", "unit": "fahrenheit"}}</tool_call>',
    ),
    5: (
        "booking",
        '<tool_call>{"name": "book_trip", "arguments": {"origin": "Rome", "destination": "Oslo"}}</tool_call>',
    ),
}
MAX_NEW = {1: 64, 2: 64, 3: 64, 4: 12, 5: 64}  # request 4 is cut by max_new_tokens, not by its end token
LATE = {4: 2, 5: 5}  # these join the batch after that many steps


@pytest.mark.parametrize("variant", sorted(DRAFTER_VARIANTS))
def test_outputs_equal_the_targets_answers_in_fewer_steps(variant, monkeypatch, model_dir, tokenizer):
    install(monkeypatch, variant)
    spec = make_speculative_config(model_dir, tools_for=tools_by_client, num_speculative_tokens=8)
    eos = tokenizer.eos_token_id
    targets = {rid: [*encode(tokenizer, text), eos] for rid, (_, text) in ANSWERS.items()}
    executor = FakeExecutor(spec, targets, seed=len(variant))
    requests = {
        rid: FakeLlmRequest(rid, encode(tokenizer, PROMPT), MAX_NEW[rid], end_id=eos, client_id=client)
        for rid, (client, _) in ANSWERS.items()
    }
    for rid in requests:
        if rid not in LATE:
            executor.add(requests[rid])
    while executor.active or executor.steps <= max(LATE.values()):
        for rid, at in LATE.items():
            if executor.steps == at:
                executor.add(requests[rid])
        executor.step()

    for rid, request in requests.items():
        assert request.output == targets[rid][: MAX_NEW[rid]], f"request {rid} differs from the target"
        assert request.state.name == "GENERATION_COMPLETE"
    for rid, drafts, room in executor.drafts:
        assert len(drafts) <= min(8, max(room, 0)), f"request {rid}: {len(drafts)} drafts with {room} tokens left"

    steps = {rid: sum(1 for r, _, _ in executor.drafts if r == rid) + 1 for rid in requests}  # + context step
    for rid in (1, 2, 5):  # tool calls: the schema forces names, keys and punctuation
        assert steps[rid] * 2 <= len(requests[rid].output), (rid, steps[rid], len(requests[rid].output))
    assert executor.steps < sum(len(r.output) for r in requests.values())
    assert spec.resource_manager.core.active_requests() == []
    assert spec.resource_manager.stats()["accepted"] == executor.accepted
