"""ToolSpec arms of `specplug bench`: parsing, the vLLM settings they become, the refusal of a memory built from the
measured prompts, the tool-call token share and the report's extra table (no engine started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specplug.bench.arms import parse_arm, toolspec_settings
from specplug.bench.cli import check_memories
from specplug.bench.measure import ArmJob
from specplug.bench.quality.bfcl import tool_call_tokens
from specplug.bench.report import markdown
from specplug.bench.workload import Workload
from specplug.core.errors import ConfigError
from specplug.core.toolspec.config import ToolSpecConfig
from specplug.core.toolspec.memory import InvocationMemoryBank


def test_toolspec_arms_parse_and_become_vllm_flags() -> None:
    from specplug.bench.vllm_engine import additional_config, speculative_config

    arm = parse_arm("toolspec:k=6:memory=m.json:recycling=0")
    config = ToolSpecConfig.from_mapping(toolspec_settings(arm))
    assert config.num_speculative_tokens == 6 and config.memory_path == "m.json" and not config.use_recycling
    assert speculative_config(arm) == {"model": "specplug.ToolSpec", "num_speculative_tokens": 6}
    extra = additional_config(arm)["specplug"]
    assert extra["method"] == "toolspec" and extra["memory_path"] == "m.json" and "num_speculative_tokens" not in extra
    assert "memory_tokens_per_tenant" not in extra  # tokens=0: the config's default
    capped = additional_config(parse_arm("toolspec:tokens=4000"))["specplug"]
    assert capped["memory_tokens_per_tenant"] == 4000


@pytest.mark.parametrize(
    "spec", ["toolspec:k=0", "toolspec:format=xml", "toolspec:schema=2", "toolspec:width=3", "toolspec:tokens=-5"]
)
def test_bad_toolspec_arms_fail_before_any_engine_starts(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_arm(spec)


def test_memory_built_from_measured_prompts_is_refused(tmp_path: Path) -> None:
    prompts = [[1, 2, 3], [4, 5, 6]]
    workload = Workload("d", ["a", "b"], prompts, [[7, 8]], [0])
    bank = InvocationMemoryBank()
    bank.add("bench", [9, 9, 9, 9, 9], prompt=[100, 101])
    bank.save(tmp_path / "ok.json")
    check_memories([parse_arm(f"toolspec:memory={tmp_path / 'ok.json'}")], workload)
    bank.add("bench", [9, 9, 9, 9, 9], prompt=[4, 5, 6])
    bank.save(tmp_path / "seen.json")
    with pytest.raises(ConfigError, match="memory built from other prompts"):
        check_memories([parse_arm(f"toolspec:memory={tmp_path / 'seen.json'}")], workload)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="readable ToolSpec memory"):
        check_memories([parse_arm(f"toolspec:memory={tmp_path / 'bad.json'}")], workload)


def test_tool_call_token_share() -> None:
    pieces = ["Sure", ". ", "<tool_call>", '{"a"', ": 1}", "</tool_call>", " done"]
    ids = list(range(len(pieces)))

    def decode(token_ids):
        return "".join(pieces[i] for i in token_ids)

    assert tool_call_tokens(ids, decode) == 4
    assert tool_call_tokens(ids[:4], decode) == 2  # an unclosed call counts to the end
    assert tool_call_tokens([0, 1, 6], decode) == 0


def test_report_shows_sources_share_and_near_ties() -> None:
    record = {
        "round": 0, "concurrency": 1, "arm": "toolspec", "output_tokens_per_s": 10.0, "ttft_ms": 1.0, "tpot_ms": 1.0,
        "e2e_latency_ms": {"p50": 1.0}, "mean_accepted_length": 3.0, "acceptance_rate": 0.5,
        "target_forwards_per_token": 0.4, "exact_match": 0.5, "accuracy": None,
        "near_tie_divergences": 1, "divergence_top2_gap": {"3": 1e-4},
        "drafted_by_source": {"schema": 40, "memory": 10}, "tool_call_token_fraction": 0.75,
    }  # fmt: skip
    results = {
        "engine": "vllm", "model": "m", "dataset": "bfcl", "command": "c", "engine_version": "v",
        "engine_settings": {}, "machine": {}, "num_prompts": 2, "prompt_digest": "x", "max_tokens": 8, "rounds": 1,
        "records": [record],
    }  # fmt: skip
    text = markdown(results)
    assert "0.50 (1/1 div. at near-ties)" in text
    assert "| 0 | 1 | toolspec | 75.0% | memory 10, schema 40 |" in text


def test_every_concurrency_pass_starts_from_the_arms_own_memory(monkeypatch) -> None:
    """A pass must not draft from an earlier pass's answers to the same prompts (that would replay outputs)."""
    from types import SimpleNamespace

    from specplug.bench import reference_engine
    from specplug.reference import models, runner

    events: list[str] = []

    class Drafter:
        def __init__(self) -> None:
            self.drafted: dict = {}

        def reset_memory(self) -> None:
            events.append("reset")

        def bind(self, requests) -> None:
            events.append("bind")

    class Runner:
        def __init__(self, *_, **__) -> None:
            pass

        def generate(self, prompts, *_, **__):
            events.append("generate")
            stats = SimpleNamespace(accepted_per_step=[], proposed=0, accepted=0, rescued=0)
            return SimpleNamespace(tokens=[[1]] * len(prompts), stats=stats, first_token_s=[0.0] * len(prompts),
                                   finish_s=[0.0] * len(prompts), forwards=[1] * len(prompts))  # fmt: skip

    monkeypatch.setattr(models, "load_causal_lm", lambda *_: None)
    monkeypatch.setattr(runner, "ReferenceRunner", Runner)

    class Session:  # the arm's session, as the reference engine opens it for a specplug method
        proposer = Drafter()

        def reset_memory(self) -> None:
            self.proposer.reset_memory()

        def close(self) -> None:
            events.append("close")

    monkeypatch.setattr(reference_engine, "open_session", lambda *_: Session())
    workload = Workload("d", ["a", "b"], [[1, 2], [3, 4]], [[5]], [0], tools=[None, None], warmup_tools=[None])
    reference_engine.run_arm(ArmJob(parse_arm("toolspec"), Path("."), workload, [1, 2], 4))
    passes = "".join({"reset": "R", "generate": "g", "close": "C"}.get(e, "") for e in events)
    assert passes == "gRggRgC"  # warm-up, a reset before each concurrency pass (2 batches at c=1, 1 at c=2), close
