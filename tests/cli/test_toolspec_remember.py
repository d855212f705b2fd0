"""`specplug toolspec remember` on both engines, and its memory used by a warm `specplug bench` ToolSpec arm
(SmolLM2-135M, BFCL single-turn): lossless against `ar`, memory drafts counted, overlap refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.cli import main
from specplug.core.toolspec.memory import InvocationMemoryBank

pytestmark = pytest.mark.slow


def _remember(engine: str, skip: int, out: Path) -> InvocationMemoryBank:
    argv = ["toolspec", "remember", "--engine", engine, "--num-prompts", "3", "--skip", str(skip), "--out", str(out)]
    assert main([*argv, "--dataset", "bfcl:single_turn", "--max-tokens", "48", "--concurrency", "2"]) == 0
    return InvocationMemoryBank.load(out)


def _bench(engine: str, memory: Path, out: Path) -> dict:
    argv = ["bench", "run", "--engine", engine, "--model", "smollm2-135m", "--dataset", "bfcl:single_turn"]
    argv += ["--num-prompts", "3", "--max-tokens", "48", "--concurrency", "1", "--out", str(out)]
    assert main([*argv, "--arms", f"ar,toolspec,toolspec:memory={memory}"]) == 0
    return {r["arm"]: r for r in json.loads((out / "results.json").read_text())["records"]}


@pytest.mark.parametrize("engine", ["reference", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_remembered_answers_warm_a_lossless_bench_arm(tmp_path: Path, capsys, engine: str) -> None:
    memory = tmp_path / "memory.json"
    bank = _remember(engine, 40, memory)
    assert bank.summary()["answers"] == 3 and len(bank.source_prompts) == 3 and bank.tenants() == ["bench"]

    records = _bench(engine, memory, tmp_path / "bench")
    cold, warm = records["toolspec"], records[f"toolspec:memory={memory}"]
    for arm in (cold, warm):  # lossless: identical to ar, or a divergence checked to be a near-tie
        assert arm["exact_match"] == 1.0 or arm["near_tie_divergences"] == len(arm["first_divergence"])
        assert arm["num_accepted_tokens"] > 0 and arm["drafted_by_source"].get("schema", 0) > 0
        assert 0 < arm["tool_call_token_fraction"] <= 1
    # Cold starts empty (warm-up answers are forgotten) and learns online from the run's own finished answers.
    assert warm["drafted_by_source"].get("memory", 0) > cold["drafted_by_source"].get("memory", 0)

    seen = tmp_path / "seen.json"
    _remember(engine, 0, seen)
    capsys.readouterr()
    refused = ["bench", "run", "--engine", engine, "--dataset", "bfcl:single_turn", "--num-prompts", "3"]
    assert main([*refused, "--arms", f"ar,toolspec:memory={seen}", "--out", str(tmp_path / "no")]) == 2
    assert "memory built from other prompts" in capsys.readouterr().err
