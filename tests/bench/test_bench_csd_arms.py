"""CSD arms of `specplug bench`: parsing, the engine settings they become, and the refusal of a memory file that
was calibrated on the prompts being measured (no engine started)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from specplug.bench.arms import csd_settings, parse_arm, proposer_arm
from specplug.bench.cli import check_memories
from specplug.bench.workload import Workload
from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.csd.config import CSDConfig
from specplug.core.errors import ConfigError


def test_csd_arms_parse_and_map_to_their_proposer() -> None:
    cold = parse_arm("csd")
    assert proposer_arm(cold).kind == "ngram" and proposer_arm(cold).options == {"k": 6, "min": 2, "max": 4}
    assert CSDConfig.from_mapping(csd_settings(cold)) == CSDConfig(lam=6, tau=0.01)
    arm = parse_arm("csd:proposer=draft_model:model=smollm2-135m:layers=10:k=3:lam=inf:memory=m.json")
    assert proposer_arm(arm).kind == "draft_model"
    assert proposer_arm(arm).options == {"model": "smollm2-135m", "k": 3, "layers": 10}
    config = CSDConfig.from_mapping(csd_settings(arm))
    assert config.lam == math.inf and config.memory_path == "m.json"

    from specplug.bench.vllm_engine import additional_config, speculative_config

    assert speculative_config(cold)["method"] == "ngram" and speculative_config(cold)["num_speculative_tokens"] == 6
    settings = {"method": "csd", "lam": 6, "tau": 0.01, "memory_path": None, "namespace": "default"}
    settings["tenants"] = "separate"
    assert additional_config(cold) == {"specplug": settings}
    assert additional_config(parse_arm("ngram")) is None


@pytest.mark.parametrize(
    "spec", ["csd:proposer=eagle", "csd:proposer=draft_model", "csd:lam=0", "csd:tau=2", "csd:lamda=3"]
)
def test_bad_csd_arms_fail_before_any_engine_starts(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_arm(spec)


def _workload(prompts: list[list[int]]) -> Workload:
    return Workload("stand-in", [str(i) for i in range(len(prompts))], prompts, [[9, 9]], [0])


def test_memories_calibrated_on_measured_prompts_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ocm.json"
    bank = CorrectionMemoryBank()
    bank.record_calibration([[5, 6, 7]])
    bank.save(path)
    arm = parse_arm(f"csd:memory={path}")
    check_memories([arm], _workload([[1, 2], [3, 4]]))  # disjoint: fine
    with pytest.raises(ConfigError, match="1 of this run's prompts went into"):
        check_memories([arm], _workload([[1, 2], [5, 6, 7]]))
    path.write_text("{}")
    with pytest.raises(ConfigError, match="readable CSD memory file"):
        check_memories([arm], _workload([[1, 2]]))
