"""Real SGLang 0.5.23 (installed without its CUDA stack): plugin discovery, `--speculative-algorithm CSD`, and
CSD's server-argument handling through SGLang's own resolution (`handle_speculative_decoding`)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from specplug.core.errors import ConfigError, PatchError
from specplug.plugins.sglang_csd.settings import CONFIG_ENV

pytestmark = pytest.mark.sglang

PROBE = """
import sys
from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins, load_plugins_by_group
print("FOUND", sorted(load_plugins_by_group(GENERAL_PLUGINS_GROUP)))
from specplug.plugins.sglang_csd.bootstrap import BOOTSTRAP
print("BEFORE", BOOTSTRAP.state)
load_plugins()
load_plugins()
print("AFTER", BOOTSTRAP.state)
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
algo = SpeculativeAlgorithm.from_string("csd")
print("ALGO", type(algo).__module__ + "." + type(algo).__qualname__, algo.name, algo.is_ngram(), algo.has_draft_kv())
print("OVERLAP", algo.supports_overlap)
lazy = ("sglang.srt.speculative.ngram_worker", "specplug.plugins.sglang_csd.worker")
print("LAZY", *(name not in sys.modules for name in lazy))
"""


def test_sglang_load_plugins_registers_csd() -> None:
    """SGLang's own loader (fresh process, as SGLang runs it) finds the entry point and `CSD` resolves to us;
    nothing imports the worker stack (it needs sgl_kernel) until a CSD worker is built."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert "'specplug'" in lines["FOUND"]
    assert lines["BEFORE"] == "not-run"
    assert lines["AFTER"] == "loaded"
    assert lines["ALGO"] == "specplug.plugins.sglang_csd.algo.CSDAlgo CSD True False"
    assert lines["OVERLAP"] == "True"
    assert lines["LAZY"] == "True True"


@pytest.fixture
def csd():
    from specplug.plugins.sglang_csd.registration import register_csd

    return register_csd()


def test_registration_is_idempotent(csd) -> None:
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    from specplug.plugins.sglang_csd.algo import CSDAlgo
    from specplug.plugins.sglang_csd.registration import register_csd

    assert register_csd() is csd
    assert isinstance(SpeculativeAlgorithm.from_string("CSD"), CSDAlgo)
    with pytest.raises(ValueError, match="already registered"):  # SGLang's own duplicate guard still stands
        SpeculativeAlgorithm.register("CSD")(lambda server_args: object)


def test_a_foreign_csd_registration_is_reported_not_overwritten(csd, monkeypatch: pytest.MonkeyPatch) -> None:
    from sglang.srt.speculative.spec_info import CustomSpecAlgo, SpeculativeAlgorithm

    from specplug.core.bootstrap import EngineBootstrap
    from specplug.plugins.sglang_csd.registration import register_csd

    foreign = CustomSpecAlgo("CSD", lambda server_args: object)
    monkeypatch.setattr(SpeculativeAlgorithm, "from_string", classmethod(lambda cls, name: foreign))
    with pytest.raises(PatchError, match="already registered by someone else"):
        register_csd()
    boot = EngineBootstrap("sglang", register_csd)  # what SGLang's loader runs: logged, never raised into SGLang
    assert boot() == "failed" and "someone else" in boot.detail


def test_csd_answers_every_dispatch_question_like_ngram(csd) -> None:
    """SGLang calls these on whatever `from_string` returned; CSD must have them all and agree with NGRAM."""
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    ngram = SpeculativeAlgorithm.NGRAM
    public = {
        name for name in vars(SpeculativeAlgorithm) if not name.startswith("_") and callable(getattr(ngram, name))
    }
    missing = sorted(public - {"from_string", "register"} - set(dir(csd)))
    assert missing == []
    predicates = sorted(n for n in public if n.startswith(("is_", "supports_", "has_", "need_", "carries_")))
    assert "is_ngram" in predicates and len(predicates) > 15
    assert {p: getattr(csd, p)() for p in predicates} == {p: getattr(ngram, p)() for p in predicates}
    assert csd.get_num_tokens_per_req_for_target_verify(8, False) == 8
    assert csd.get_platform_worker_cls() is None


def test_create_worker_accepts_overlap_and_imports_the_worker_lazily(csd, monkeypatch: pytest.MonkeyPatch) -> None:
    from sglang.srt.server_args import ServerArgs

    class StandInCSDWorker:
        pass

    stand_in = types.ModuleType("specplug.plugins.sglang_csd.worker")
    stand_in.CSDWorker = StandInCSDWorker
    monkeypatch.setitem(sys.modules, "specplug.plugins.sglang_csd.worker", stand_in)
    server_args = ServerArgs(model_path="dummy", speculative_algorithm="CSD")
    assert server_args.disable_overlap_schedule is False
    assert csd.create_worker(server_args) is StandInCSDWorker


# --- argument handling through SGLang's resolution -----------------------------------------------------------

FIELDS = (
    "speculative_num_draft_tokens",
    "speculative_eagle_topk",
    "speculative_num_steps",
    "max_running_requests",
    "disable_overlap_schedule",
    "enable_mixed_chunk",
)


def resolve(algorithm: str, **flags: object) -> dict[str, object]:
    from sglang.srt.arg_groups.overrides import resolution_result
    from sglang.srt.arg_groups.speculative_hook import handle_speculative_decoding
    from sglang.srt.server_args import ServerArgs

    server_args = ServerArgs(**{"model_path": "dummy", "page_size": 1, "speculative_algorithm": algorithm, **flags})
    handle_speculative_decoding(server_args)
    return {field: resolution_result(server_args, field) for field in ("speculative_algorithm", *FIELDS)}


@pytest.mark.parametrize(
    "flags",
    [
        {"device": "cpu"},
        {"device": "cuda"},
        {"device": "cuda", "speculative_num_draft_tokens": 8, "max_running_requests": 16},
        {"device": "cuda", "speculative_ngram_max_bfs_breadth": 4, "speculative_num_steps": 3},
        {"device": "xpu", "disable_overlap_schedule": True, "enable_mixed_chunk": True},
    ],
)
def test_csd_resolves_sglang_flags_like_ngram(csd, monkeypatch: pytest.MonkeyPatch, flags: dict) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    ngram, ours = resolve("ngram", **flags), resolve("csd", **flags)
    assert ngram.pop("speculative_algorithm") == "NGRAM" and ours.pop("speculative_algorithm") == "CSD"
    assert ours == ngram


@pytest.mark.parametrize(
    "flags",
    [
        {"device": "npu"},
        {"device": "cuda", "page_size": 16, "attention_backend": "triton"},
        {"device": "cuda", "attn_dp_size": 2},
        {"device": "cuda", "speculative_ngram_external_corpus_path": "c.jsonl", "speculative_num_draft_tokens": 4},
    ],
)
def test_csd_refuses_what_ngram_refuses(csd, monkeypatch: pytest.MonkeyPatch, flags: dict) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    for algorithm in ("ngram", "csd"):
        with pytest.raises(ValueError):
            resolve(algorithm, **flags)


def test_gamma_in_the_settings_file_sets_the_tree_size(csd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"gamma": 7, "tau": 0.05}))
    assert resolve("csd", device="cuda")["speculative_num_draft_tokens"] == 8
    assert resolve("csd", device="cuda", speculative_num_draft_tokens=8)["speculative_num_draft_tokens"] == 8
    with pytest.raises(ConfigError, match="gamma"):
        resolve("csd", device="cuda", speculative_num_draft_tokens=12)


def test_startup_refuses_bad_settings_and_memory_files(csd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"tau": 2}))
    with pytest.raises(ConfigError, match="tau"):
        resolve("csd", device="cuda")
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"lamda": 3}))
    with pytest.raises(ConfigError, match="lamda"):
        resolve("csd", device="cuda")
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=CONFIG_ENV):
        resolve("csd", device="cuda")
    corrupt = tmp_path / "memory.json"
    corrupt.write_text('{"format": "specplug-data", "kind"')
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"memory_path": str(corrupt)}))
    with pytest.raises(ConfigError, match=r"memory_path.*truncated or corrupt"):  # the session's memory hook
        resolve("csd", device="cuda")
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"save_path": str(tmp_path / "out.json")}))
    with pytest.raises(ConfigError, match="dp-size"):
        resolve("csd", device="cuda", dp_size=2)
    monkeypatch.setenv(CONFIG_ENV, "{}")
    with pytest.raises(ConfigError, match="rejection-sampling"):
        resolve("csd", device="cuda", speculative_use_rejection_sampling=True)
