"""The bench harness: schema, identical prompts for every arm, quality check, failure isolation.

The engine is replaced by a recording stand-in (named so, tests/bench/conftest.py): these tests check the
harness, not an engine. The real-engine run is tests/bench/test_bench_vllm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.assets.datasets import PromptRecord
from specplug.bench import cli as bench_cli
from specplug.bench.workload import Workload
from specplug.cli import main


@pytest.fixture
def harness(bench, tmp_path: Path):
    def run(engine, *extra: str) -> tuple[int, dict]:
        out = tmp_path / "out"
        argv = ["--engine", "reference", "--arms", "ar,ngram,ngram:k=2", "--concurrency", "1,4", "--out", str(out)]
        rc = bench(engine, *argv, *extra)
        return rc, json.loads((out / "results.json").read_text())

    return run


def test_results_schema_and_ratios(harness, stand_in) -> None:
    rc, results = harness(stand_in())
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


def test_every_arm_gets_identical_prompts_and_rounds_alternate(harness, stand_in) -> None:
    engine = stand_in()
    harness(engine, "--rounds", "2")
    assert all(p == stand_in.PROMPTS for p in engine.seen.values()) and len(engine.seen) == 3
    assert engine.order == ["ar", "ngram", "ngram:k=2", "ngram:k=2", "ngram", "ar"]


def test_exact_match_catches_a_corrupted_arm(harness, stand_in) -> None:
    _, results = harness(stand_in(corrupt="ngram:k=2"))
    bad = [r for r in results["records"] if r["arm"] == "ngram:k=2"]
    assert all(r["exact_match"] == pytest.approx(2 / 3) for r in bad)
    assert all(r["first_divergence"] == {"1": 1} for r in bad)


def test_a_failing_arm_does_not_lose_the_others(harness, stand_in) -> None:
    rc, results = harness(stand_in(fail="ngram"))
    assert rc == 1
    failed = [r for r in results["records"] if r["arm"] == "ngram"]
    assert all("engine worker exited" in r["error"] for r in failed)
    others = [r for r in results["records"] if r["arm"] != "ngram"]
    assert len(others) == 4 and all(r["output_tokens_per_s"] for r in others)


def test_bad_settings_fail_before_any_arm_runs(harness, stand_in, capsys) -> None:
    assert main(["bench", "run", "--arms", "ar,beam"]) == 2
    assert "invalid setting arm='beam'" in capsys.readouterr().err
    assert main(["bench", "run", "--arms", "ngram:q=1"]) == 2
    assert main(["bench", "run", "--concurrency", "0"]) == 2
    assert main(["bench", "run", "--engine", "sglang"]) == 2


def test_random_token_datasets_are_refused() -> None:
    from specplug.bench.workload import build_workload
    from specplug.core.errors import ConfigError

    with pytest.raises(ConfigError, match="random tokens inflate"):
        build_workload(Path("."), "random", 4)


def _bfcl(i: int, number: int) -> PromptRecord:
    gold = {"ground_truth": [{"math.factorial": {"number": [number]}}]}
    return PromptRecord(f"simple_python_{i}", "bfcl", "simple_python", [{"role": "user", "content": "?"}], [], gold)


def test_accuracy_is_scored_per_arm_from_its_own_outputs(harness, bench, stand_in, monkeypatch, tmp_path) -> None:
    """A corrupted arm loses accuracy on the prompt it corrupted; every arm is scored by the same rule."""
    # The stand-in "model" calls math.factorial with the sum of its output ids: 33, 27, 48 for the `ar` outputs.
    records = [_bfcl(i, sum(out)) for i, out in stand_in.AR_OUTPUT.items()]
    bench.workloads["bfcl"] = Workload("bfcl", ["a", "b", "c"], stand_in.PROMPTS, [[9, 9]], [0], records=records)
    call = '<tool_call>{{"name": "math.factorial", "arguments": {{"number": {}}}}}</tool_call>'
    monkeypatch.setattr(bench_cli, "_decoder", lambda workload: lambda ids: call.format(sum(ids)))
    _, results = harness(stand_in(corrupt="ngram:k=2"), "--dataset", "bfcl")
    assert results["accuracy_metric"].startswith("BFCL call match")
    by = {(r["arm"], r["concurrency"]): r for r in results["records"]}
    assert by[("ar", 1)]["accuracy"] == 1.0 and by[("ngram", 4)]["accuracy"] == 1.0
    bad = by[("ngram:k=2", 4)]
    assert bad["accuracy"] == pytest.approx(2 / 3) and bad["accuracy_failed"] == [1] and bad["accuracy_scored"] == 3
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| 0.67 (2/3) |" in report and "Accuracy: BFCL call match" in report
    lines = [json.loads(x) for x in (tmp_path / "out" / "outputs.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 2 * 3  # arms x concurrencies x prompts, each decoded once for auditing
    wrong = [x for x in lines if x["correct"] is False]
    assert [(x["arm"], x["id"]) for x in wrong] == [("ngram:k=2", "b")] * 2 and '"number": 28' in wrong[0]["text"]


def test_accuracy_is_none_and_na_without_gold(harness, stand_in, tmp_path) -> None:
    _, results = harness(stand_in())
    assert results["accuracy_metric"] is None
    assert all(r["accuracy"] is None for r in results["records"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Accuracy: n/a" in report and report.count("| n/a |") == len(results["records"])
    assert not (tmp_path / "out" / "outputs.jsonl").exists()  # no tokenizer to decode with (stand-in model)


def test_an_arm_this_engine_cannot_run_exits_2_and_the_rest_is_written(bench, stand_in, tmp_path: Path, capsys):
    out = tmp_path / "out"
    rc = bench(stand_in(), "--engine", "reference", "--arms", "ar,suffix,ngram", "--out", str(out))
    assert rc == 2
    assert "not run: arm suffix: suffix is vLLM's own speculative method; run it with --engine vllm" in (
        capsys.readouterr().err
    )
    results = json.loads((out / "results.json").read_text())
    assert {r["arm"] for r in results["records"]} == {"ar", "ngram"}
    assert "suffix" in results["unavailable"]
    assert "Arm `suffix` unavailable" in (out / "report.md").read_text()
