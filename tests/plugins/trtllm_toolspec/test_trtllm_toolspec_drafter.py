"""ToolSpecTRTDrafter against stand-ins of TensorRT-LLM's Drafter, requests and batches (fake_trtllm.py).

What these prove: drafts are set on every generation request and nowhere else, within TensorRT-LLM's budget
(draft length and the request's remaining new tokens); schema-forced tokens fill a tool call's name; state
follows request ids when rows move; one request's drafting error costs only that request its drafts; the
constructor survives the three Drafter.__init__ signatures TensorRT-LLM has had. Unverified against a real
TensorRT-LLM (no GPU here).
"""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from specplug.plugins.trtllm_toolspec import drafter as drafter_module
from specplug.plugins.trtllm_toolspec.config import make_speculative_config
from specplug.plugins.trtllm_toolspec.drafter import base_init_kwargs, drafter_class, make_drafter
from specplug.plugins.trtllm_toolspec.engine import EngineMissingError
from specplug.plugins.trtllm_toolspec.pool import ToolSpecPool

from .cases import BOOKING, CALL_PREFIX, TOOLS, WEATHER, encode, fail_drafts_of, generating, tools_by_client
from .fake_trtllm import DRAFTER_VARIANTS, FakeLlmRequest, ScheduledRequests, install

K = 6


@pytest.fixture
def spec(fake_trtllm, model_dir):
    return make_speculative_config(model_dir, tools=TOOLS, num_speculative_tokens=K)


def test_every_generation_request_gets_drafts_within_the_budget(spec, tokenizer):
    requests = [generating(tokenizer, rid, CALL_PREFIX) for rid in (1, 2, 3)]
    near_end = generating(tokenizer, 4, CALL_PREFIX, max_new_tokens=len(encode(tokenizer, CALL_PREFIX)) + 3)
    at_end = generating(tokenizer, 5, CALL_PREFIX, max_new_tokens=len(encode(tokenizer, CALL_PREFIX)) + 1)
    context = FakeLlmRequest(6, encode(tokenizer, "hello"), 16)
    context.py_draft_tokens = ["untouched"]
    batch = ScheduledRequests([context], [*requests, near_end, at_end])

    spec.drafter.prepare_draft_tokens(batch, None)

    for request in requests:
        assert 0 < len(request.py_draft_tokens) <= K
        assert all(isinstance(t, int) for t in request.py_draft_tokens)
    assert len(near_end.py_draft_tokens) == 2  # 3 tokens left: 2 drafts + the token the target adds
    assert at_end.py_draft_tokens == []  # 1 token left: nothing to draft
    assert context.py_draft_tokens == ["untouched"]  # TensorRT-LLM drafts for generation requests only


def test_a_tool_call_name_is_drafted_from_the_schema(spec, tokenizer):
    request = generating(tokenizer, 1, CALL_PREFIX)
    spec.drafter.prepare_draft_tokens(ScheduledRequests([], [request]), None)

    assert tokenizer.decode(request.py_draft_tokens).startswith("get_weather")
    assert spec.resource_manager.core.drafted["schema"] >= len(request.py_draft_tokens) - 1


def test_dummy_requests_get_no_drafts_and_no_state(spec, tokenizer):
    dummy = generating(tokenizer, 7, CALL_PREFIX)
    dummy.is_cuda_graph_dummy = True
    dummy.py_draft_tokens = [1, 2]
    spec.drafter.prepare_draft_tokens(ScheduledRequests([], [dummy]), None)

    assert dummy.py_draft_tokens == []
    assert not spec.resource_manager.core.has_request("7")


def test_state_follows_request_ids_when_rows_move(fake_trtllm, model_dir, tokenizer):
    spec = make_speculative_config(model_dir, tools_for=tools_by_client, num_speculative_tokens=K)
    weather = generating(tokenizer, 11, CALL_PREFIX, client_id="weather")
    booking = generating(tokenizer, 12, CALL_PREFIX, client_id="booking")

    names = {}
    for step, rows in enumerate([(weather, booking), (booking, weather), (weather, booking)]):
        for batch_idx, request in enumerate(rows):
            request.py_batch_idx = batch_idx
        spec.drafter.prepare_draft_tokens(ScheduledRequests([], list(rows)), None)
        for request in rows:
            text = tokenizer.decode(request.py_draft_tokens)
            names.setdefault(request.py_client_id, []).append(text)
            request.add_new_token(request.py_draft_tokens[0], 0)  # the target accepted one draft token
        assert step < 3

    assert names["weather"][0].startswith("get_weather")
    assert names["booking"][0].startswith("book_trip")
    # every later step continues the request's own call, whatever its row was
    assert all("book" not in text for text in names["weather"])
    assert all("weather" not in text for text in names["booking"])
    assert sorted(spec.resource_manager.core.active_requests()) == ["11", "12"]


def test_a_drafting_error_costs_only_that_request_its_drafts(spec, tokenizer, caplog, monkeypatch):
    pool = spec.resource_manager
    core = pool.core
    fail_drafts_of(core, "2", monkeypatch)
    requests = [generating(tokenizer, rid, CALL_PREFIX) for rid in (1, 2, 3)]
    with caplog.at_level(logging.WARNING, logger="specplug.trtllm_toolspec"):
        for _ in range(3):
            spec.drafter.prepare_draft_tokens(ScheduledRequests([], requests), None)

    assert requests[1].py_draft_tokens == []
    assert requests[0].py_draft_tokens and requests[2].py_draft_tokens
    failures = [r for r in caplog.records if "drafting failed for request 2" in r.getMessage()]
    assert len(failures) == 1  # logged once, not every step
    assert "boom in the core" in failures[0].getMessage()

    requests[1].state = requests[1].state.GENERATION_COMPLETE
    pool.free_resources(requests[1])  # the failed request still ends cleanly, without entering the memory
    assert not core.has_request("2")
    assert core.bank.summary()["answers"] == 0


@pytest.mark.parametrize("variant", sorted(DRAFTER_VARIANTS))
def test_the_constructor_fits_each_drafter_signature(variant, monkeypatch, model_dir, tokenizer):
    install(monkeypatch, variant)
    pool_spec = make_speculative_config(model_dir, tools=TOOLS, num_speculative_tokens=K, max_concurrency=4)
    drafter = pool_spec.drafter

    assert isinstance(drafter, DRAFTER_VARIANTS[variant])
    expected = {
        "max_concurrency_only": {"max_concurrency": 4},
        "max_draft_tokens": {"max_draft_tokens": K, "max_concurrency": 4, "draft_len_schedule": None},
        "max_draft_len": {
            "max_draft_len": K,
            "max_total_draft_tokens": K,
            "max_concurrency": 4,
            "draft_len_schedule": None,
        },
    }[variant]
    assert drafter.init_kwargs == expected
    assert (drafter.max_draft_len, drafter.max_total_draft_tokens, drafter.max_concurrency) == (K, K, 4)

    request = generating(tokenizer, 1, CALL_PREFIX)
    batch = ScheduledRequests([], [request])
    drafter.prepare_draft_tokens(batch, None)
    drafter.pad_draft_tokens_for_cuda_graph(batch)  # the engine's helper reads what this version stored
    assert len(request.py_draft_tokens) == K


def test_an_unknown_drafter_signature_is_refused_clearly(monkeypatch, model_dir):
    class FutureDrafter(DRAFTER_VARIANTS["max_draft_len"]):
        def __init__(self, spec_config, max_concurrency=None):
            super().__init__(max_concurrency=max_concurrency)

    modules = install(monkeypatch)
    modules["tensorrt_llm._torch.speculative.drafter"].Drafter = FutureDrafter
    pool = ToolSpecPool(model_dir)
    with pytest.raises(EngineMissingError, match="spec_config"):
        make_drafter(pool)


def test_kwarg_filter_offers_only_named_parameters():
    def init(self, max_draft_tokens, *args, max_concurrency=None, **kwargs):
        pass

    assert base_init_kwargs(init, max_draft_len=3, max_concurrency=None) == {
        "max_draft_tokens": 3,
        "max_concurrency": None,
    }


def test_budget_follows_a_changed_draft_length(spec, tokenizer):
    spec.drafter.update_max_total_draft_tokens(2)  # TensorRT-LLM's draft_len_schedule path
    request = generating(tokenizer, 1, CALL_PREFIX)
    spec.drafter.prepare_draft_tokens(ScheduledRequests([], [request]), None)
    assert len(request.py_draft_tokens) == 2


def test_the_engine_registered_pool_is_the_one_drafted_from(spec, fake_trtllm, model_dir, tokenizer, caplog):
    rm_module = fake_trtllm["tensorrt_llm._torch.pyexecutor.resource_manager"]
    copy = type(spec.resource_manager)(model_dir, spec.resource_manager.config, tools=[WEATHER, BOOKING])
    engine_rm = rm_module.ResourceManager({rm_module.ResourceManagerType.SPEC_RESOURCE_MANAGER: copy})
    request = generating(tokenizer, 1, CALL_PREFIX)
    with caplog.at_level(logging.WARNING, logger="specplug.trtllm_toolspec"):
        spec.drafter.prepare_draft_tokens(ScheduledRequests([], [request]), engine_rm)

    assert spec.drafter.pool is copy
    assert copy.core.has_request("1") and not spec.resource_manager.core.has_request("1")
    assert "copy of the drafter's pool" in caplog.text


def test_the_class_is_built_per_engine_drafter_and_cached(fake_trtllm):
    cls = drafter_class()
    assert cls is drafter_class() is drafter_module.ToolSpecTRTDrafter
    assert issubclass(cls, fake_trtllm["tensorrt_llm._torch.speculative.drafter"].Drafter)
    assert cls.__name__ == "ToolSpecTRTDrafter"


def test_without_tensorrt_llm_the_error_says_what_is_missing(monkeypatch, model_dir):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(EngineMissingError, match="TensorRT-LLM with its PyTorch backend"):
        drafter_class()
    with pytest.raises(EngineMissingError, match="NGC"):
        make_speculative_config(model_dir)


ADAPTER = Path(drafter_module.__file__).parent


def test_no_module_imports_tensorrt_llm_at_import_time():
    for path in sorted(ADAPTER.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:  # module level only: imports inside functions are lazy
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "tensorrt_llm" for n in names), f"{path.name}: {names}"
    code = (
        "import sys; sys.modules['tensorrt_llm'] = None\n"
        "import specplug.plugins.trtllm_toolspec as p\n"
        "import specplug.plugins.trtllm_toolspec.plugin, specplug.plugins.trtllm_toolspec.serve\n"
        "assert callable(p.make_speculative_config)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
