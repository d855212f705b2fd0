"""`bench run --temperature`: sampled runs, and SMC-SD as an arm of the reference engine (the core's SMC sampler on
transformers, SmolLM2-135M), judged by target log-prob and distinct bigrams beside `ar` sampled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.cli import main

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    argv = ["bench", "run", "--engine", "reference", "--dataset", "mtbench", "--num-prompts", "2", "--max-tokens", "8"]
    return main([*argv, "--out", str(out), *extra]), out


def test_smc_arm_samples_with_the_core_sampler_and_reports_quality(tmp_path: Path) -> None:
    arms = "ar,smc:n=2:k=2:model=target:layers=4:dt=1.0"
    rc, out = _run(tmp_path, "--arms", arms, "--temperature", "1")
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["sampling"]["temperature"] == 1.0
    smc = next(r for r in results["records"] if r["arm"].startswith("smc"))
    ar = next(r for r in results["records"] if r["arm"] == "ar")
    assert "error" not in smc
    # SMC-SD commits γ+1 = 3 tokens per particle per target forward; plain decoding needs one forward per token
    assert smc["target_forwards_per_token"] < 0.7 < ar["target_forwards_per_token"]
    assert smc["acceptance_rate"] == pytest.approx(1.0)  # every drafted token is committed (weights, not rejection)
    for key in ("mean_logp", "distinct_bigrams", "logp_change_vs_ar", "bigram_change_vs_ar"):
        assert smc[key] is not None, key
    assert "exact_match" not in smc or smc["exact_match"] is None  # sampled: no exact match against `ar`


def test_sampled_ar_is_reproducible_and_seeded(tmp_path: Path) -> None:
    rc_a, out_a = _run(tmp_path / "a", "--arms", "ar", "--temperature", "1")
    rc_b, out_b = _run(tmp_path / "b", "--arms", "ar", "--temperature", "1")
    rc_g, out_g = _run(tmp_path / "g", "--arms", "ar")
    assert rc_a == rc_b == rc_g == 0
    text = [(o / "outputs.jsonl").read_text() for o in (out_a, out_b, out_g)]
    assert text[0] == text[1]
    assert text[0] != text[2]


def test_smc_arm_needs_a_temperature(tmp_path: Path, capsys) -> None:
    rc, out = _run(tmp_path, "--arms", "ar,smc:n=2")
    assert rc == 2
    assert "--temperature > 0" in capsys.readouterr().err
    assert not out.exists()
    rc, _ = _run(tmp_path, "--arms", "ar", "--temperature", "-1")
    assert rc == 2
