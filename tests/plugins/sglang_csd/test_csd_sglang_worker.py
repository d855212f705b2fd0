"""CSDWorker and its verify hook, with SGLang's real HookRegistry and runtime context.

SGLang's `ngram_worker` module cannot import here (it needs `sgl_kernel`), so it is replaced, for these tests only,
by `StandInNgramWorkerModule`: a module of the same dotted name whose `NGRAMWorker` has SGLang's constructor and
verifies, like the real one (`ngram_worker.py:475-485`), through the module-level name `eagle_sample` — the
binding the registry patches. Its `eagle_sample` is the greedy branch of SGLang's (`eagle_utils.py:641-660`),
computed with specplug's greedy tree verifier in SGLang's layout (equal to SGLang's kernel: see
test_csd_sglang_kernel_oracle.py).
"""

from __future__ import annotations

import json
import math
import sys
import types
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.errors import ConfigError, PatchError
from specplug.core.hookspecs import hookimpl
from specplug.core.host import tenant_from_salt
from specplug.plugins.sglang_csd import verify_hook
from specplug.plugins.sglang_csd.settings import CONFIG_ENV

pytestmark = pytest.mark.sglang

NGRAM_MODULE = "sglang.srt.speculative.ngram_worker"
WORKER_MODULE = "specplug.plugins.sglang_csd.worker"

STAND_IN_SOURCE = '''
"""StandInNgramWorkerModule: stands in for sglang.srt.speculative.ngram_worker in tests."""
import torch
from types import SimpleNamespace
from specplug.core.verifiers.greedy_tree import GreedyTreeVerifier
from specplug.plugins.sglang_csd.tree_layout import draft_batch_from_sglang, sglang_outputs


def eagle_sample(verify_input, batch, logits_output, grammar_mask=None, uno_target_max_top_k=None, *,
                 watermark_state=None, watermark_full_mask=True):
    n = verify_input.draft_token_num
    bs = verify_input.retrieve_index.shape[0]
    logits = logits_output.next_token_logits
    logits.add_(batch.logit_bias)  # SGLang processes the logits in place (eagle_utils.py:579-584)
    draft = draft_batch_from_sglang(verify_input.draft_token.view(bs, n), verify_input.retrieve_next_token,
                                    verify_input.retrieve_next_sibling, drop_padding=False)
    result = GreedyTreeVerifier().verify(draft, logits.view(bs, n, -1))
    return sglang_outputs(result, verify_input.retrieve_index)


class NGRAMWorker:
    def __init__(self, server_args, gpu_id, nccl_port, target_worker):
        self.server_args = server_args
        self.draft_token_num = server_args.speculative_num_draft_tokens
        self.completed = []
        self.finished = []
        self.drafted = []

    def _prepare_for_speculative_decoding(self, batch):  # NGRAM's drafting (ngram_worker.py:307); here a record
        self.drafted.append(batch.spec_algorithm.name)

    def forward_batch_generation(self, batch, on_publish=None, pp_proxy_tensors=None):
        self._prepare_for_speculative_decoding(batch)
        if batch.fail is True:
            raise RuntimeError("target forward failed")
        predict, accept_lens, accept_index = eagle_sample(
            batch.spec_info, batch, batch.logits_output, None, watermark_state=None
        )
        if batch.fail == "after verify":
            raise RuntimeError("KV update after the verify failed")
        return SimpleNamespace(next_token_ids=predict, accept_lens=accept_lens, accept_index=accept_index)

    def on_verify_complete_cpu(self, num_correct_drafts_per_req, batch_size=0):
        self.completed.append(list(num_correct_drafts_per_req))

    def note_request_finished(self, *, rid, natural_stop):  # BaseSpecWorker's no-op hook (base_spec_worker.py:389)
        self.finished.append((rid, natural_stop))
'''


class StandInAlgo:
    def __init__(self, name: str) -> None:
        self.name = name


class StandInGroup:
    """A TP group of `world_size` ranks that records broadcasts."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.broadcasts: list[tuple[int, int]] = []

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        self.broadcasts.append((tensor.numel(), src))


@pytest.fixture
def sglang_stand_ins(monkeypatch: pytest.MonkeyPatch):
    """The stand-in ngram_worker module; SGLang's HookRegistry left as it was found afterwards."""
    from sglang.srt.plugins.hook_registry import HookRegistry

    module = types.ModuleType(NGRAM_MODULE)
    exec(compile(STAND_IN_SOURCE, "<StandInNgramWorkerModule>", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, NGRAM_MODULE, module)
    saved_hooks = {k: list(v) for k, v in HookRegistry._hooks.items()}
    saved_patched = set(HookRegistry._patched)
    monkeypatch.setattr(verify_hook, "_registered", set())
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    sys.modules.pop(WORKER_MODULE, None)
    yield module
    sys.modules.pop(WORKER_MODULE, None)
    HookRegistry._hooks = defaultdict(list, saved_hooks)
    HookRegistry._patched = saved_patched


@pytest.fixture
def single_rank():
    from sglang.srt.runtime_context import get_parallel

    with get_parallel().override(tp_rank=0, tp_group=StandInGroup(1)):
        yield


def server_args(**overrides: object) -> SimpleNamespace:
    values = {"speculative_num_draft_tokens": 4, "model_path": "m", "dp_size": 1}
    return SimpleNamespace(**{**values, **overrides})


def stand_in_req(rid: str = "r1", top_k: int = 1, cache_salt: str | None = None) -> SimpleNamespace:
    """The fields of SGLang's `Req` the host reads: id, prompt, answer so far, sampling settings, finish reason, and
    the deployment's per-tenant `cache_salt`."""
    return SimpleNamespace(
        rid=rid,
        cache_salt=cache_salt,
        origin_input_ids=[7, 9],
        output_ids=[9],
        sampling_params=SimpleNamespace(temperature=0.0 if top_k == 1 else 0.7, top_k=top_k, top_p=1.0),
        finished_reason=None,
    )


def make_batch(
    algorithm: str = "CSD", fail: bool | str = False, reqs: list[SimpleNamespace] | None = None, top_k: int = 1
) -> SimpleNamespace:
    """One request: root 9 ─ 3 ─ 4, and a padding leaf. The target prefers 5 after the root, 3 is close (ln 0.37);
    after 3 it wants 4 (exact), after 4 the bonus 8. `reqs`: SGLang's request objects of the rows (optional)."""
    n, vocab = 4, 10
    logits = torch.full((n, vocab), -10.0)
    logits[0, 5], logits[0, 3], logits[1, 4], logits[2, 8] = 0.0, -1.0, 0.0, 0.0
    spec_info = SimpleNamespace(
        draft_token=torch.tensor([9, 3, 4, 0]),
        retrieve_index=torch.arange(n).view(1, n),
        retrieve_next_token=torch.tensor([[1, 2, -1, -1]]),
        retrieve_next_sibling=torch.tensor([[-1, 3, -1, -1]]),
        draft_token_num=n,
    )
    return SimpleNamespace(
        spec_algorithm=StandInAlgo(algorithm),
        sampling_info=SimpleNamespace(top_ks=torch.tensor([top_k]), is_all_greedy=top_k == 1),
        spec_info=spec_info,
        logits_output=SimpleNamespace(next_token_logits=logits),
        logit_bias=torch.zeros(vocab),
        fail=fail,
        **({} if reqs is None else {"reqs": reqs}),
    )


def csd_worker(**args: object):
    from specplug.plugins.sglang_csd.worker import CSDWorker

    return CSDWorker(server_args(**args), gpu_id=0, nccl_port=0, target_worker=None)


# --- the hook through SGLang's registry ------------------------------------------------------------------------


def test_hook_is_applied_by_sglangs_registry_once(sglang_stand_ins) -> None:
    original = sglang_stand_ins.eagle_sample
    assert not verify_hook.hook_in_effect()
    verify_hook.install_verify_hook()
    patched = sglang_stand_ins.eagle_sample
    assert patched is not original and patched.__wrapped__ is original
    assert verify_hook.hook_in_effect()
    verify_hook.install_verify_hook()  # idempotent: no second wrapper
    assert sglang_stand_ins.eagle_sample is patched
    # Outside a CSD worker the patched function is SGLang's, bit for bit.
    batch = make_batch("NGRAM")
    want = original(batch.spec_info, batch, batch.logits_output)
    got = patched(batch.spec_info, batch, batch.logits_output)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_a_hook_that_did_not_take_effect_stops_the_start(sglang_stand_ins) -> None:
    with pytest.raises(PatchError, match="not in effect"):
        verify_hook.install_verify_hook(f"{NGRAM_MODULE}.eagle_sample_renamed_upstream")


# --- the worker -------------------------------------------------------------------------------------------------


def test_worker_calibrates_its_own_verify_calls_and_learns_after_the_step(sglang_stand_ins, single_rank, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"lam": 2, "tau": 0.1, "tenants": "shared"}))
    worker = csd_worker()
    assert verify_hook.hook_in_effect()
    assert worker.csd.sync is None and worker.csd.saver is False

    first = worker.forward_batch_generation(make_batch())
    assert first.accept_lens.tolist() == [1]  # (3, 5) seen once: not yet rescuable at λ = 2
    assert worker.csd.memory.top(5) == [(3, 5, 1)] and worker.csd.pending == []

    second = worker.forward_batch_generation(make_batch())
    assert second.accept_lens.tolist() == [3]  # rescued 3, then exact 4, bonus 8
    assert second.accept_index.tolist() == [[0, 1, 2, -1]] and second.next_token_ids.tolist() == [3, 4, 8, 0]
    assert worker.csd.rescued_tokens == 1 and worker.csd.memory.top(1) == [(3, 5, 2)]

    # Another algorithm's batch through the same patched function: untouched, nothing learned.
    assert worker.forward_batch_generation(make_batch("NGRAM")).accept_lens.tolist() == [1]
    assert worker.csd.memory.top(1) == [(3, 5, 2)]

    # A failed step learns nothing.
    with pytest.raises(RuntimeError, match="target forward failed"):
        worker.forward_batch_generation(make_batch(fail=True))
    assert worker.csd.pending == [] and worker.csd.memory.top(1) == [(3, 5, 2)]

    worker.on_verify_complete_cpu([2], batch_size=1)
    assert worker.completed == [[2]]


def test_bias_applied_by_sglang_is_seen_by_csd(sglang_stand_ins, single_rank, monkeypatch) -> None:
    """CSD judges the logits as SGLang processed them (penalties, bias, grammar mask)."""
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"lam": 1, "tau": 0.1}))
    worker = csd_worker()
    batch = make_batch()
    batch.logit_bias[3] = -math.inf  # e.g. a grammar mask forbidding 3: no rescue
    assert worker.forward_batch_generation(batch).accept_lens.tolist() == [1]


def test_tensor_parallel_ranks_commit_rank_zeros_verdict(sglang_stand_ins, monkeypatch, tmp_path: Path) -> None:
    from sglang.srt.runtime_context import get_parallel

    monkeypatch.setenv(CONFIG_ENV, json.dumps({"lam": 1, "tau": 0.1, "save_path": str(tmp_path / "m.json")}))
    group = StandInGroup(2)
    with get_parallel().override(tp_rank=1, tp_group=group):
        worker = csd_worker()
    assert worker.csd.saver is False  # one writer per file: rank 0
    worker.forward_batch_generation(make_batch())
    assert group.broadcasts == [(4, 0), (4, 0), (1, 0)]  # predict, accept_index, accept_lens from rank 0


def test_memory_file_is_loaded_and_saved(sglang_stand_ins, single_rank, monkeypatch, tmp_path: Path) -> None:
    calibrated = CorrectionMemoryBank()
    calibrated.memory("math").add_counts([(3 << 32) | 5], [5])
    calibrated.save(tmp_path / "calibrated.json")
    settings = {
        "lam": 6,
        "tau": 0.1,
        "namespace": "math",
        "memory_path": str(tmp_path / "calibrated.json"),
        "save_path": str(tmp_path / "learned.json"),
        "save_interval_s": 0.001,
        "tenants": "shared",
    }
    monkeypatch.setenv(CONFIG_ENV, json.dumps(settings))
    worker = csd_worker()
    assert worker.csd.saver and len(worker.csd.memory) == 1
    assert worker.forward_batch_generation(make_batch()).accept_lens.tolist() == [3]  # 5 prior + this one = λ
    worker.on_verify_complete_cpu([2], batch_size=1)  # interval passed: background save
    assert worker.csd.close()
    learned = CorrectionMemoryBank.load(tmp_path / "learned.json")
    assert learned.memory("math").top(1) == [(3, 5, 6)]
    assert learned.metadata["engine"] == "sglang" and learned.metadata["model_path"] == "m"
    assert learned.metadata["stats"]["rescued_tokens"] == 1


def test_worker_start_refuses_bad_settings(sglang_stand_ins, single_rank, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"tau": 0}))
    with pytest.raises(ConfigError, match="tau"):
        csd_worker()
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"gamma": 6}))
    with pytest.raises(ConfigError, match="gamma"):
        csd_worker(speculative_num_draft_tokens=4)
    bad = tmp_path / "bad.json"
    CorrectionMemoryBank().save(bad)
    bad.write_text(bad.read_text().replace('"namespaces":{}', '"namespaces":{"x":1}'))
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"memory_path": str(bad)}))
    with pytest.raises(ConfigError, match=r"memory_path.*checksum"):
        csd_worker()
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"memory_path": str(tmp_path / "absent.json")}))
    with pytest.raises(ConfigError, match=r"memory_path.*cannot read"):
        csd_worker()


# --- the worker as a specplug host: what reaches the hooks -------------------------------------------------------


class Recorder:
    """A specplug plugin that records every announcement and wraps every verify call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @hookimpl
    def specplug_on_request_start(self, request, session) -> None:
        self.calls.append(("start", request.request_id, list(request.prompt_token_ids), session.engine))

    @hookimpl
    def specplug_on_step(self, outcome, session) -> None:
        pairs = outcome.extra.get("mismatches")
        self.calls.append(
            (
                "step",
                list(outcome.request_ids),
                outcome.num_proposed.tolist(),
                outcome.num_accepted.tolist(),
                outcome.num_rescued.tolist(),
                None if pairs is None else pairs.tolist(),
                bool(outcome.extra.get("fallback")),
            )
        )

    @hookimpl
    def specplug_on_request_finish(self, request_id, num_output_tokens, finish_reason, output_token_ids) -> None:
        self.calls.append(("finish", request_id, num_output_tokens, finish_reason, list(output_token_ids)))

    @hookimpl
    def specplug_on_session_close(self, session) -> None:
        self.calls.append(("close", session.method))

    @hookimpl(wrapper=True)
    def specplug_verify(self, verifier, draft, target_logits, options):
        self.calls.append(("verify", type(verifier).__name__, draft.num_tokens.tolist()))
        return (yield)

    @hookimpl(wrapper=True)
    def specplug_propose(self, proposer, contexts, options):
        self.calls.append(("propose", proposer.name))
        return (yield)


@pytest.fixture
def recorder(register_plugin):
    return register_plugin(Recorder(), "test-recorder")


def test_worker_reaches_the_method_only_through_the_session(sglang_stand_ins, single_rank, monkeypatch, recorder):
    """Session of the table's method; verify through `specplug_verify`; start, step (with the mismatches the
    method learns from), finish and close announced; a failed forward and another algorithm's batch announce
    nothing."""
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"lam": 2, "tau": 0.1}))
    worker = csd_worker()
    session = worker.csd.session
    assert (session.method, session.engine, session.facts["num_speculative_tokens"]) == ("csd_tree", "sglang", 3)
    assert worker.csd.verifier is session.verifier and worker.csd.memory is session.verifier.memory

    req = stand_in_req("r1", cache_salt="team-a")  # a tenant: it learns in a memory of its own
    worker.forward_batch_generation(make_batch(reqs=[req]))
    worker.forward_batch_generation(make_batch(reqs=[req]))
    worker.forward_batch_generation(make_batch("NGRAM", reqs=[req]))  # another algorithm: untouched
    with pytest.raises(RuntimeError, match="after the verify failed"):
        worker.forward_batch_generation(make_batch(fail="after verify", reqs=[req]))
    req.output_ids, req.finished_reason = [9, 3, 4, 8], object()
    worker.note_request_finished(rid="r1", natural_stop=True)
    worker.note_request_finished(rid="never-verified", natural_stop=False)  # not announced: never started
    assert worker.finished == [("r1", True), ("never-verified", False)]  # SGLang's own hook still runs
    worker.csd.close()

    assert recorder.calls == [
        ("propose", "engine"),  # NGRAM's own drafting, through specplug_propose
        ("start", "r1", [7, 9], "sglang"),  # before its first verify: its tenant decides the memory it reads
        ("verify", "CalibratedTreeVerifier", [2]),
        ("step", ["r1"], [2], [0], [0], [[3, 5]], False),  # not yet rescuable at λ = 2, learned
        ("propose", "engine"),
        ("verify", "CalibratedTreeVerifier", [2]),
        ("step", ["r1"], [2], [2], [1], [[3, 5]], False),  # rescued 3, then exact 4
        ("propose", "engine"),  # the NGRAM batch: drafted by the worker, nothing judged or announced
        ("propose", "engine"),
        ("verify", "CalibratedTreeVerifier", [2]),  # the forward that failed after its verify: never announced
        ("finish", "r1", 4, "stop", [9, 3, 4, 8]),
        ("close", "csd_tree"),
    ]
    assert worker.drafted == ["CSD", "CSD", "NGRAM", "CSD"]  # NGRAM's drafting itself ran unchanged
    tenant = session.memory.memory("tenant:" + tenant_from_salt("team-a"))
    assert tenant.top(1) == [(3, 5, 2)]  # learned from the two announced steps only, in the tenant's memory
    assert len(worker.csd.memory) == 0  # the calibrated (here empty) memory is read-only while serving
    steps = session.report()["steps"]
    assert (steps["steps"], steps["proposed"], steps["accepted"], steps["rescued"]) == (2, 4, 2, 1)
    assert (steps["requests_started"], steps["requests_finished"]) == (1, 1)


def test_steps_sglang_verified_alone_are_announced_as_fallback(
    sglang_stand_ins, single_rank, monkeypatch, recorder
) -> None:
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"lam": 1, "tau": 0.1}))
    worker = csd_worker()
    worker.forward_batch_generation(make_batch(reqs=[stand_in_req("s1", top_k=20)], top_k=20))  # sampled row
    assert [c for c in recorder.calls if c[0] == "step"] == [("step", ["s1"], [2], [0], [0], None, True)]
    assert len(worker.csd.memory) == 0 and worker.csd.session.report()["steps"]["fallback_steps"] == 1

    monkeypatch.setattr(worker.csd, "calibrate", lambda **_: 1 / 0)  # a bug inside the method's verify
    recorder.calls.clear()
    assert worker.forward_batch_generation(make_batch(reqs=[stand_in_req("g1")])).accept_lens.tolist() == [1]
    calls = [c for c in recorder.calls if c[0] != "propose"]
    assert [c[0] for c in calls] == ["start", "step"] and calls[1][-2:] == (None, True)
    assert worker.csd.failures == 1 and len(worker.csd.memory) == 0


def test_offline_settings_learn_nothing_from_the_announcements(sglang_stand_ins, single_rank, monkeypatch, recorder):
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"lam": 1, "tau": 0.1, "online": False}))
    worker = csd_worker()
    worker.forward_batch_generation(make_batch(reqs=[stand_in_req()]))
    assert [c[5] for c in recorder.calls if c[0] == "step"] == [[[3, 5]]]  # announced ...
    assert len(worker.csd.memory) == 0  # ... and not learned: the method's hook honours `online`


class FINISH_LENGTH:  # named as SGLang's finish-reason class (managers/schedule_batch.py)
    pass


def test_finish_reasons_and_a_memory_from_another_model(
    sglang_stand_ins, single_rank, monkeypatch, tmp_path: Path, recorder, caplog
) -> None:
    calibrated = CorrectionMemoryBank(metadata={"model_path": "other-model"})
    calibrated.save(tmp_path / "calibrated.json")
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"memory_path": str(tmp_path / "calibrated.json")}))
    with caplog.at_level("WARNING", logger="specplug"):
        worker = csd_worker()
    assert "calibrated with model other-model, this server runs m" in caplog.text
    assert worker.csd.session.memory.metadata["model_path"] == "m"  # what it goes on learning from

    long, cut = stand_in_req("long"), stand_in_req("cut")
    worker.forward_batch_generation(make_batch(reqs=[long]))
    worker.forward_batch_generation(make_batch(reqs=[cut]))
    long.finished_reason, cut.finished_reason = FINISH_LENGTH(), object()
    worker.note_request_finished(rid="long", natural_stop=False)
    worker.note_request_finished(rid="cut", natural_stop=False)
    assert [c[:4] for c in recorder.calls if c[0] == "finish"] == [
        ("finish", "long", 1, "length"),
        ("finish", "cut", 1, "abort"),
    ]
