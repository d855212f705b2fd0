"""The bench's shared pieces without an engine: the vLLM subprocess runner (with a stand-in worker process, named
so), the session-counter arithmetic of the vLLM worker, the memory-building skeleton behind `specplug csd
calibrate` and `specplug toolspec remember` (with a stand-in engine), the integer settings and the timer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from specplug.bench import reference_engine, vllm_engine
from specplug.bench.config import at_least, integers
from specplug.bench.timing import Laps, median_ms
from specplug.bench.workload import Workload
from specplug.cli import main
from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.errors import ConfigError
from specplug.core.toolspec.memory import InvocationMemoryBank

# Stand-in for `python -m specplug.bench.vllm_worker JOB RESULT`: reports two finished requests, echoes its job and
# the environment it was given, or fails / hangs when the job says so.
STAND_IN_WORKER = """
import json, os, sys, time
job = json.load(open(sys.argv[1]))
if job.get("hang"):
    time.sleep(60)
if job.get("fail"):
    print("stand-in worker: the engine broke", file=sys.stderr)
    sys.exit(3)
open(job["progress"], "ab").write(b"..")
json.dump({"job": job, "env": os.environ.get("STAND_IN")}, open(sys.argv[2], "w"))
"""


@pytest.fixture
def stand_in_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    real = subprocess.Popen

    def popen(command, **kwargs):
        assert command[1:3] == ["-m", "specplug.bench.vllm_worker"]
        return real([sys.executable, "-c", STAND_IN_WORKER, *command[3:]], **kwargs)

    monkeypatch.setattr(vllm_engine.subprocess, "Popen", popen)


def test_run_worker_returns_the_result_with_the_jobs_environment(stand_in_worker) -> None:
    got = vllm_engine.run_worker({"loop": "x", "env": {"STAND_IN": "yes"}}, "arm a", timeout_s=60, total=2)
    assert got["env"] == "yes" and got["job"]["loop"] == "x" and got["job"]["progress"]


def test_run_worker_failure_carries_the_log_tail_and_timeouts_kill(stand_in_worker) -> None:
    with pytest.raises(RuntimeError, match=r"exited with 3:\n(.|\n)*the engine broke"):
        vllm_engine.run_worker({"fail": True, "env": {}}, "arm b", timeout_s=60)
    with pytest.raises(TimeoutError, match="arm c ran past its timeout"):
        vllm_engine.run_worker({"hang": True, "env": {}}, "arm c", timeout_s=1)


def test_session_counters_are_differenced_around_a_pass() -> None:
    from specplug.bench.vllm_worker import _change, _session_counters

    before = _session_counters({"stats": {"steps": 2, "rescued": 1}, "drafted": {"schema": 3}, "memory": {}})
    after = _session_counters({"stats": {"steps": 7, "rescued": 4}, "drafted": {"schema": 5, "memory": 2}})
    assert _change(after, before) == {"stats": {"steps": 5, "rescued": 3}, "drafted": {"schema": 2, "memory": 2}}
    assert _session_counters(None) == {} and _change({}, {}) is None


def _slice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Workload:
    workload = Workload("stand-in", ["a", "b"], [[1, 2], [3, 4]], [[5, 6]], [0], tools=[None, None])
    monkeypatch.setattr("specplug.bench.workload.memory_slice", lambda *a: (tmp_path / "model", workload))
    return workload


def _stand_in_engine(monkeypatch: pytest.MonkeyPatch, write) -> list:
    """The reference engine stood in: records its call and writes a memory where it is told to."""
    calls = []

    def run_arm(job):
        calls.append((job.arm, job.concurrencies, job.max_tokens, job.timeout_s))
        write(job.save_memory, job.workload)
        return []

    monkeypatch.setattr(reference_engine, "run_arm", run_arm)
    return calls


def test_calibrate_serves_lambda_inf_and_records_its_prompts(monkeypatch, tmp_path: Path, capsys) -> None:
    workload = _slice(monkeypatch, tmp_path)

    def write(path, workload):
        bank = CorrectionMemoryBank()
        bank.memory("team").observe(torch.tensor([7, 7]), torch.tensor([8, 8]))
        bank.save(path)

    calls = _stand_in_engine(monkeypatch, write)
    out = tmp_path / "ocm.json"
    argv = ["csd", "calibrate", "--engine", "reference", "--proposer", "ngram:k=3", "--namespace", "team"]
    assert main([*argv, "--out", str(out), "--skip", "5", "--concurrency", "2"]) == 0
    ((arm, concurrencies, max_tokens, _),) = calls
    assert arm.kind == "csd" and arm.options["lam"] == float("inf") and arm.options["k"] == 3
    assert arm.options["namespace"] == "team" and concurrencies == [2] and max_tokens == 128
    bank = CorrectionMemoryBank.load(out)
    assert bank.overlap(workload.prompts + workload.warmup) == [0, 1, 2]
    assert bank.metadata["kind"] == "calibration" and bank.metadata["skip"] == 5
    assert bank.metadata["pair"]["draft"] == "ngram" and "smollm2" in bank.metadata["pair"]["about"]
    assert "wrote" in capsys.readouterr().err and bank.memory("team").observations == 2


def test_remember_serves_toolspec_and_summarises_the_file(monkeypatch, tmp_path: Path, capsys) -> None:
    _slice(monkeypatch, tmp_path)

    def write(path, workload):
        bank = InvocationMemoryBank()
        bank.add("bench", [9, 8, 7, 6, 5], prompt=workload.prompts[0])
        bank.save(path)

    calls = _stand_in_engine(monkeypatch, write)
    out = tmp_path / "memory.json"
    assert main(["toolspec", "remember", "--engine", "reference", "--arm", "toolspec:k=4", "--out", str(out)]) == 0
    assert calls[0][0].label == "toolspec:k=4"
    assert "1 answers, 5 tokens" in capsys.readouterr().err


def test_integer_settings_are_refused_by_name() -> None:
    assert integers("concurrency", "4,1,4") == [4, 1, 4] and integers("shape", "1,2,3", count=3) == [1, 2, 3]
    for text, kwargs in (("0", {}), ("a", {}), ("", {}), ("1,2", {"count": 3})):
        with pytest.raises(ConfigError, match="invalid setting x="):
            integers("x", text, **kwargs)
    at_least(0, skip=0)
    with pytest.raises(ConfigError, match="invalid setting rounds=0"):
        at_least(1, max_tokens=3, rounds=0)
    with pytest.raises(ConfigError, match="skip=True"):
        at_least(0, skip=True)


def test_the_timer_warms_up_then_takes_the_median() -> None:
    calls = []
    assert median_ms(lambda: calls.append(1), repeats=5, warmup=2) >= 0 and len(calls) == 7
    laps = Laps()
    laps.seconds = [0.001, 0.003, 0.002]
    assert (laps.mean_ms, laps.median_ms) == pytest.approx((2.0, 2.0)) and laps.p90_ms == pytest.approx(2.8)
