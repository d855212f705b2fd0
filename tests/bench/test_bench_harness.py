"""The bench harness: schema, identical prompts for every arm, quality check, failure isolation.

The engine is replaced by a recording stand-in (named so): these tests check the harness, not an engine. The
real-engine run is tests/bench/test_bench_vllm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.bench import cli as bench_cli
from specplug.bench.measure import ArmRun, RequestRecord
from specplug.bench.workload import Workload
from specplug.cli import main

PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
AR_OUTPUT = {0: [10, 11, 12], 1: [13, 14], 2: [15, 16, 17]}


class StandInEngine:
    """Stand-in for an engine: returns AR_OUTPUT (or a corrupted copy) and records what each arm received."""

    def __init__(self, corrupt: str | None = None, fail: str | None = None) -> None:
        self.seen: dict[str, list[list[int]]] = {}
        self.order: list[str] = []
        self.corrupt, self.fail = corrupt, fail

    def __call__(self, args, arm, model_path, workload: Workload, concurrencies):
        self.seen[arm.label] = workload.prompts
        self.order.append(arm.label)
        if arm.label == self.fail:
            raise RuntimeError("engine worker exited with 1")
        runs = []
        for conc in concurrencies:
            records = []
            for i in range(len(workload.prompts)):
                out = list(AR_OUTPUT[i])
                if arm.label == self.corrupt and i == 1:
                    out[1] += 1
                records.append(RequestRecord(i, out, 0.01, 0.05, len(out) if arm.kind == "ar" else 2))
            spec = arm.kind != "ar"
            runs.append(ArmRun(arm.label, conc, records, 0.5 if spec else 1.0, 4 * spec, 12 * spec, 6 * spec))
        return runs


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    workload = Workload("mtbench", ["a", "b", "c"], PROMPTS, [[9, 9]], [0])
    monkeypatch.setattr("specplug.core.assets.resolve_model", lambda name: tmp_path / "model")
    monkeypatch.setattr("specplug.bench.workload.build_workload", lambda *a, **k: workload)

    def run(engine: StandInEngine, *extra: str) -> tuple[int, dict]:
        monkeypatch.setattr(bench_cli, "_run_arm", engine)
        out = tmp_path / "out"
        rc = main(
            [
                "bench",
                "--engine",
                "reference",
                "--arms",
                "ar,ngram,ngram:k=2",
                "--concurrency",
                "1,4",
                "--out",
                str(out),
                *extra,
            ]
        )
        return rc, json.loads((out / "results.json").read_text())

    return run


def test_results_schema_and_ratios(harness) -> None:
    rc, results = harness(StandInEngine())
    assert rc == 0
    assert results["schema_version"] == 1 and results["command"].startswith("specplug bench")
    assert len(results["records"]) == 3 * 2
    keys = {
        "output_tokens_per_s",
        "ttft_ms",
        "tpot_ms",
        "mean_accepted_length",
        "acceptance_rate",
        "target_forwards_per_token",
        "exact_match",
        "accuracy",
        "e2e_latency_ms",
        "arm",
        "concurrency",
    }
    for rec in results["records"]:
        assert keys <= set(rec)
    ngram = next(r for r in results["records"] if r["arm"] == "ngram" and r["concurrency"] == 4)
    assert ngram["speedup_vs_ar"] == pytest.approx(2.0)
    assert ngram["mean_accepted_length"] == pytest.approx(1 + 6 / 4)
    assert ngram["acceptance_rate"] == pytest.approx(0.5)
    assert ngram["exact_match"] == 1.0
    ar = next(r for r in results["records"] if r["arm"] == "ar" and r["concurrency"] == 1)
    assert ar["target_forwards_per_token"] == 1.0 and ar["acceptance_rate"] is None


def test_every_arm_gets_identical_prompts_and_rounds_alternate(harness) -> None:
    engine = StandInEngine()
    harness(engine, "--rounds", "2")
    assert all(p == PROMPTS for p in engine.seen.values()) and len(engine.seen) == 3
    assert engine.order == ["ar", "ngram", "ngram:k=2", "ngram:k=2", "ngram", "ar"]


def test_exact_match_catches_a_corrupted_arm(harness) -> None:
    _, results = harness(StandInEngine(corrupt="ngram:k=2"))
    bad = [r for r in results["records"] if r["arm"] == "ngram:k=2"]
    assert all(r["exact_match"] == pytest.approx(2 / 3) for r in bad)
    assert all(r["first_divergence"] == {"1": 1} for r in bad)


def test_a_failing_arm_does_not_lose_the_others(harness) -> None:
    rc, results = harness(StandInEngine(fail="ngram"))
    assert rc == 1
    failed = [r for r in results["records"] if r["arm"] == "ngram"]
    assert all("engine worker exited" in r["error"] for r in failed)
    others = [r for r in results["records"] if r["arm"] != "ngram"]
    assert len(others) == 4 and all(r["output_tokens_per_s"] for r in others)


def test_bad_settings_fail_before_any_arm_runs(harness, capsys) -> None:
    assert main(["bench", "--arms", "ar,beam"]) == 2
    assert "invalid setting arm='beam'" in capsys.readouterr().err
    assert main(["bench", "--arms", "ngram:q=1"]) == 2
    assert main(["bench", "--concurrency", "0"]) == 2
    assert main(["bench", "--engine", "sglang"]) == 2


def test_random_token_datasets_are_refused() -> None:
    from specplug.bench.workload import build_workload
    from specplug.core.errors import ConfigError

    with pytest.raises(ConfigError, match="random tokens inflate"):
        build_workload(Path("."), "random", 4)
