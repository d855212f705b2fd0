"""ToolSpecPool as TensorRT-LLM's resource manager, driven by the stand-in executor (fake_trtllm.py).

What these prove: a request that ends leaves the pool and its answer reaches its tenant's memory (a later request
with the same prefix then gets "memory" drafts), tenants never see each other's answers, the drafter and pool
pickle before first use (the LLM API ships them to its workers) and build their state lazily there, the memory
is saved at shutdown and loads again, the engine's acceptance feedback is counted, and a core that cannot be
built disables ToolSpec without stopping decoding. Unverified against a real TensorRT-LLM (no GPU here).
"""

from __future__ import annotations

import logging
import pickle

from specplug.plugins.trtllm_toolspec.config import make_speculative_config

from .cases import PROMPT, TOOLS, WEATHER_ANSWER, encode, generating, tenant_by_client
from .fake_trtllm import (
    BaseResourceManager,
    DrafterMaxDraftLen,
    FakeExecutor,
    FakeLlmRequest,
    LlmRequestState,
    ScheduledRequests,
)


def _answer(tokenizer) -> list[int]:
    return [*encode(tokenizer, WEATHER_ANSWER), tokenizer.eos_token_id]


def _request(tokenizer, rid: int, client_id=None) -> FakeLlmRequest:
    return FakeLlmRequest(rid, encode(tokenizer, PROMPT), 64, end_id=tokenizer.eos_token_id, client_id=client_id)


def _serve(spec, tokenizer, rids, client_id=None) -> FakeExecutor:
    executor = FakeExecutor(spec, {rid: _answer(tokenizer) for rid in rids})
    for rid in rids:
        executor.add(_request(tokenizer, rid, client_id))
    executor.run()
    return executor


def test_finished_requests_leave_the_pool_and_their_answers_reach_the_memory(fake_trtllm, model_dir, tokenizer):
    spec = make_speculative_config(model_dir, tools=TOOLS, num_speculative_tokens=6)
    pool = spec.resource_manager
    first = _serve(spec, tokenizer, [1])

    assert first.finished[0].output == _answer(tokenizer)
    assert pool.core.active_requests() == []
    assert pool.core.bank.summary()["answers"] == 1
    assert pool.core.drafted["memory"] == 0

    second = _serve(spec, tokenizer, [2])
    assert second.finished[0].output == _answer(tokenizer)
    assert pool.core.drafted["memory"] > 0
    assert second.steps < first.steps  # the remembered arguments are drafted too
    assert pool.core.active_requests() == []


def test_update_then_free_remembers_an_answer_once(fake_trtllm, model_dir, tokenizer):
    spec = make_speculative_config(model_dir, tools=TOOLS)
    pool = spec.resource_manager
    request = generating(tokenizer, 5, WEATHER_ANSWER)
    spec.drafter.prepare_draft_tokens(ScheduledRequests([], [request]), None)
    request.state = LlmRequestState.GENERATION_COMPLETE
    pool.update_resources(ScheduledRequests([], [request]))
    pool.free_resources(request)

    assert not pool.core.has_request("5")
    assert pool.core.bank.summary()["answers"] == 1


def test_a_cancelled_request_is_dropped_without_entering_the_memory(fake_trtllm, model_dir, tokenizer):
    spec = make_speculative_config(model_dir, tools=TOOLS)
    pool = spec.resource_manager
    request = generating(tokenizer, 6, WEATHER_ANSWER)
    spec.drafter.prepare_draft_tokens(ScheduledRequests([], [request]), None)
    pool.free_resources(request)  # still GENERATION_IN_PROGRESS: cancelled or paused

    assert not pool.core.has_request("6")
    assert pool.core.bank.summary()["answers"] == 0


def test_tenants_never_draft_from_each_others_answers(fake_trtllm, model_dir, tokenizer):
    spec = make_speculative_config(model_dir, tools=TOOLS, tenant_for=tenant_by_client)
    pool = spec.resource_manager
    _serve(spec, tokenizer, [1], client_id="alice")
    assert pool.core.bank.tenants() == ["alice"]

    _serve(spec, tokenizer, [2], client_id="bob")
    assert pool.core.drafted["memory"] == 0  # bob's identical request sees nothing of alice's

    _serve(spec, tokenizer, [3], client_id="alice")
    assert pool.core.drafted["memory"] > 0
    assert sorted(pool.core.bank.tenants()) == ["alice", "bob"]


def test_drafter_and_pool_pickle_before_first_use_and_build_lazily(fake_trtllm, model_dir, tokenizer):
    spec = make_speculative_config(model_dir, tools=TOOLS, tenant_for=tenant_by_client)
    assert spec.resource_manager.built  # the startup check built it here ...
    blob = pickle.dumps(spec)
    assert len(blob) < 20_000  # ... but only the settings travel: no tokenizer, no memory

    shipped = pickle.loads(blob)
    pool, drafter = shipped.resource_manager, shipped.drafter
    assert drafter.pool is pool
    assert isinstance(pool, BaseResourceManager) and isinstance(drafter, DrafterMaxDraftLen)
    assert not pool.built
    assert (pool.tools, pool.tenant_for, pool.config) == (TOOLS, tenant_by_client, spec.resource_manager.config)

    executor = _serve(shipped, tokenizer, [1], client_id="alice")
    assert pool.built
    assert executor.finished[0].output == _answer(tokenizer)
    assert pool.core.bank.tenants() == ["alice"]


def test_unchecked_config_pickles_without_ever_loading_anything(fake_trtllm, tokenizer, tmp_path):
    spec = make_speculative_config(str(tmp_path / "no-tokenizer-here"), check=False)
    shipped = pickle.loads(pickle.dumps(spec))
    assert not spec.resource_manager.built and not shipped.resource_manager.built


def test_the_memory_is_saved_at_shutdown_and_loads_again(fake_trtllm, model_dir, tokenizer, tmp_path):
    path = tmp_path / "memory.json"
    spec = make_speculative_config(model_dir, tools=TOOLS, save_path=str(path))
    _serve(spec, tokenizer, [1])
    spec.resource_manager.shutdown()
    assert path.is_file()

    restarted = make_speculative_config(model_dir, tools=TOOLS, memory_path=str(path))
    assert restarted.resource_manager.core.bank.summary()["answers"] == 1
    _serve(restarted, tokenizer, [2])
    assert restarted.resource_manager.core.drafted["memory"] > 0


def test_the_engines_acceptance_feedback_is_counted(fake_trtllm, model_dir, tokenizer):
    spec = make_speculative_config(model_dir, tools=TOOLS, num_speculative_tokens=5)
    executor = _serve(spec, tokenizer, [1, 2, 3])
    stats = spec.resource_manager.stats()

    assert stats["accepted"] == executor.accepted > 0
    assert stats["proposed"] == sum(len(d) for _, d, _ in executor.drafts)
    assert 0 < stats["acceptance_rate"] <= 1
    assert set(stats["by_source"]) <= {"schema", "memory", "context", "recycling"}


def test_a_core_that_cannot_be_built_disables_toolspec_not_decoding(fake_trtllm, tokenizer, tmp_path, caplog):
    spec = make_speculative_config(str(tmp_path / "missing-tokenizer"), check=False)
    with caplog.at_level(logging.ERROR, logger="specplug.trtllm_toolspec"):
        executor = _serve(spec, tokenizer, [1, 2])

    assert [r.output for r in executor.finished] == [_answer(tokenizer)] * 2
    assert all(drafts == [] for _, drafts, _ in executor.drafts)
    assert len([r for r in caplog.records if "ToolSpec is disabled" in r.getMessage()]) == 1
    assert "missing-tokenizer" in spec.resource_manager.stats()["disabled"]


def test_the_pool_never_gates_the_scheduler(fake_trtllm, model_dir, tokenizer):
    pool = make_speculative_config(model_dir, check=False).resource_manager
    assert pool.get_max_resource_count() == 0
    assert pool.get_needed_resource_to_completion(_request(tokenizer, 1)) == 0
    pool.add_dummy_requests([1, 2])
    pool.prepare_resources(None)
    pool.shutdown()  # nothing built, nothing to save
    assert not pool.built
