"""The TensorRT-LLM adapter as a specplug host, driven by the stand-in executor (fake_trtllm.py): what reaches the
plugin hooks, and in which order.

What these prove: the pool opens one `MethodSession("toolspec", engine="trtllm")` with the worker's tokenizer and
draft length as facts; a request's start is announced (tools, tenant) before its first draft; each executor step
drafts the whole batch in one `specplug_propose` call; the engine's acceptance feedback is announced as steps;
a finished request is announced with its answer (and the method's hook remembers it), a cancelled one is dropped
without being remembered; `shutdown()` closes the session, whose hook saves the memory. Unverified against a real
TensorRT-LLM (no GPU here).
"""

from __future__ import annotations

import pytest

from specplug.core.hookspecs import hookimpl
from specplug.plugins.trtllm_toolspec.config import make_speculative_config

from .cases import CALL_PREFIX, PROMPT, TOOLS, WEATHER_ANSWER, encode, fail_drafts_of, generating, tenant_by_client
from .fake_trtllm import FakeExecutor, FakeLlmRequest, ScheduledRequests


class Recorder:
    """A specplug plugin that records the announcements and wraps every drafting call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @hookimpl
    def specplug_on_request_start(self, request, session) -> None:
        self.calls.append(("start", request.request_id, request.tenant, request.tools, session.engine))

    @hookimpl
    def specplug_on_step(self, outcome, session) -> None:
        self.calls.append(
            ("step", list(outcome.request_ids), outcome.num_proposed.tolist(), outcome.num_accepted.tolist())
        )

    @hookimpl
    def specplug_on_request_finish(self, request_id, finish_reason, output_token_ids) -> None:
        self.calls.append(("finish", request_id, finish_reason, list(output_token_ids or ())))

    @hookimpl
    def specplug_on_session_close(self, session) -> None:
        self.calls.append(("close", session.method))

    @hookimpl(wrapper=True)
    def specplug_propose(self, proposer, contexts, options):
        self.calls.append(("propose", list(options["request_ids"]), list(options["budgets"])))
        return (yield)

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


@pytest.fixture
def recorder(register_plugin):
    return register_plugin(Recorder(), "test-recorder")


def _answer(tokenizer) -> list[int]:
    return [*encode(tokenizer, WEATHER_ANSWER), tokenizer.eos_token_id]


def test_the_pool_reaches_toolspec_only_through_its_session(fake_trtllm, model_dir, tokenizer, tmp_path, recorder):
    memory = tmp_path / "memory.json"
    spec = make_speculative_config(
        model_dir, tools=TOOLS, tenant_for=tenant_by_client, num_speculative_tokens=6, save_path=str(memory)
    )
    pool = spec.resource_manager
    session = pool.session
    assert (session.method, session.engine, session.facts["num_speculative_tokens"]) == ("toolspec", "trtllm", 6)
    assert session.facts["tokenizer"].name_or_path == tokenizer.name_or_path
    assert pool.core is session.proposer and session.memory is session.proposer.bank
    assert recorder.calls == []  # the startup check is not a request: nothing announced

    executor = FakeExecutor(spec, {1: _answer(tokenizer), 2: _answer(tokenizer)})
    for rid in (1, 2):
        executor.add(FakeLlmRequest(rid, encode(tokenizer, PROMPT), 64, end_id=tokenizer.eos_token_id, client_id="a"))
    executor.run()
    pool.shutdown()

    kinds = recorder.kinds()
    assert kinds.count("start") == 2 and kinds.count("finish") == 2 and kinds[-1] == "close"
    starts = [c for c in recorder.calls if c[0] == "start"]
    assert {(c[1], c[2], c[4]) for c in starts} == {("1", "a", "trtllm"), ("2", "a", "trtllm")}
    assert all(c[3] == TOOLS for c in starts)
    assert kinds.index("start") < kinds.index("propose")  # the drafter knows the tools before the first draft
    proposes = [c for c in recorder.calls if c[0] == "propose"]
    assert len(proposes) < len(executor.drafts)  # one call per executor step, not one per request and step
    assert sorted(proposes[0][1]) == ["1", "2"] and all(b <= 6 for b in proposes[0][2])
    steps = [c for c in recorder.calls if c[0] == "step"]
    assert sum(sum(c[3]) for c in steps) == executor.accepted == pool.stats()["accepted"]
    assert sum(sum(c[2]) for c in steps) == pool.stats()["proposed"]
    finishes = [c for c in recorder.calls if c[0] == "finish"]
    assert {c[1] for c in finishes} == {"1", "2"} and all(c[2:] == ("stop", _answer(tokenizer)) for c in finishes)
    assert pool.core.bank.summary()["answers"] == 2  # the finish hook remembered both answers
    assert memory.is_file()  # the close hook saved the memory
    counters = session.report()["steps"]
    assert (counters["requests_started"], counters["requests_finished"]) == (2, 2)
    assert counters["accepted"] == executor.accepted


def test_a_cancelled_request_is_announced_and_not_remembered(fake_trtllm, model_dir, tokenizer, recorder):
    spec = make_speculative_config(model_dir, tools=TOOLS)
    pool = spec.resource_manager
    request = generating(tokenizer, 6, WEATHER_ANSWER)
    spec.drafter.prepare_draft_tokens(ScheduledRequests([], [request]), None)
    pool.free_resources(request)  # still GENERATION_IN_PROGRESS: cancelled

    assert recorder.kinds() == ["start", "propose", "finish"]
    assert recorder.calls[-1][:3] == ("finish", "6", "abort")
    assert not pool.core.has_request("6") and pool.core.bank.summary()["answers"] == 0


def test_a_failing_batch_is_drafted_again_row_by_row(fake_trtllm, model_dir, tokenizer, monkeypatch, recorder):
    spec = make_speculative_config(model_dir, tools=TOOLS, num_speculative_tokens=6)
    fail_drafts_of(spec.resource_manager.core, "2", monkeypatch)
    requests = [generating(tokenizer, rid, CALL_PREFIX) for rid in (1, 2, 3)]
    spec.drafter.prepare_draft_tokens(ScheduledRequests([], requests), None)
    assert [c[1] for c in recorder.calls if c[0] == "propose"] == [["1", "2", "3"], ["1"], ["2"], ["3"]]
    recorder.calls.clear()
    spec.drafter.prepare_draft_tokens(ScheduledRequests([], requests), None)
    assert [c[1] for c in recorder.calls if c[0] == "propose"] == [["1", "3"]]  # the failed request sits out
    assert requests[1].py_draft_tokens == [] and requests[0].py_draft_tokens and requests[2].py_draft_tokens
