"""A CSD memory is served only by the (target, draft, tokenizer) pair it was calibrated for (issue 17, part 1).

Calibration (`specplug csd calibrate`) records the pair's identity in the memory file; vLLM's front end computes
the engine's identity from its own configuration and refuses a memory recorded for another pair, with one line
naming the setting, the file and both pairs. Both sides must compute the same identity for the same pair: checked
here on SmolLM2-135M's real config and tokenizer (a vLLM configuration stand-in holding the real transformers
config), and on vLLM's own `EngineArgs.create_engine_config` in the slow test.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.csd.config import PAIR_KEY
from specplug.core.errors import ConfigError
from specplug.core.model_identity import mismatch, model_config_dict, pair_identity, tokenizer_vocab
from specplug.core.startup import check_settings


@pytest.fixture(scope="module")
def target() -> Path:
    from specplug.assets import resolve_model

    return resolve_model("smollm2-135m")


def _calibrated(target: Path, proposer: str) -> dict[str, str]:
    from specplug.methods_cli import _calibration_arm, calibrated_pair

    return calibrated_pair(target, _calibration_arm(argparse.Namespace(proposer=proposer, namespace="default")))


def _memory(tmp_path: Path, pair: dict | None) -> Path:
    bank = CorrectionMemoryBank()
    bank.memory("default").observe(torch.tensor([5, 5, 9]), torch.tensor([7, 7, 2]))
    if pair is not None:
        bank.metadata[PAIR_KEY] = pair
    path = tmp_path / "ocm.json"
    bank.save(path)
    return path


def _vllm_config(target: Path, method: str, draft: Path | None = None) -> SimpleNamespace:
    from transformers import AutoConfig

    spec = SimpleNamespace(method=method, draft_model_config=None)
    if draft is not None:
        spec.draft_model_config = SimpleNamespace(hf_config=AutoConfig.from_pretrained(draft))
    model = SimpleNamespace(
        hf_config=AutoConfig.from_pretrained(target), tokenizer=str(target), tokenizer_revision=None,
        trust_remote_code=False,
    )  # fmt: skip
    return SimpleNamespace(model_config=model, speculative_config=spec)


def test_calibration_and_the_vllm_front_end_compute_the_same_pair(target: Path) -> None:
    from specplug.plugins.vllm_smc.settings import engine_pair

    calibrated = _calibrated(target, "ngram:k=6")
    assert engine_pair(_vllm_config(target, "ngram")) == calibrated
    assert calibrated["draft"] == "ngram" and "smollm2" in calibrated["about"].lower()


def test_a_memory_of_another_pair_is_refused_naming_both(tmp_path: Path, target: Path) -> None:
    from specplug.reference.models import early_exit_checkpoint

    served = _calibrated(target, "ngram:k=6")
    draft = early_exit_checkpoint(target, 20)
    other_draft = pair_identity(
        model_config_dict(target), tokenizer_vocab(target), "draft_model", model_config_dict(draft)
    )
    assert mismatch(other_draft, served) is not None and mismatch(served, served) is None
    path = _memory(tmp_path, other_draft)
    with pytest.raises(ConfigError, match="memory_path") as refused:
        check_settings("csd", {"memory_path": str(path)}, pair=served)
    message = str(refused.value)
    assert str(path) in message and "another draft" in message and "csd calibrate" in message
    assert "20 layers" in message  # the recorded draft, named for a person

    other_tokenizer = {**served, "tokenizer": "0" * 16}
    with pytest.raises(ConfigError, match="another tokenizer"):
        check_settings("csd", {"memory_path": str(_memory(tmp_path, other_tokenizer))}, pair=served)
    assert check_settings("csd", {"memory_path": str(_memory(tmp_path, served))}, pair=served) is not None


def test_a_memory_without_a_recorded_pair_is_served_with_a_warning(tmp_path: Path, target: Path, caplog) -> None:
    path = _memory(tmp_path, None)
    with caplog.at_level(logging.WARNING, logger="specplug"):
        check_settings("csd", {"memory_path": str(path)}, pair=_calibrated(target, "ngram"))
    assert "records no (target, draft, tokenizer) pair" in caplog.text


def test_the_committed_humaneval_memory_records_its_pair(target: Path) -> None:
    memory = Path(__file__).parents[2] / "docs/csd/vllm-humaneval/ocm-ngram-b95.json"
    recorded = CorrectionMemoryBank.load(memory).metadata[PAIR_KEY]
    assert mismatch(recorded, _calibrated(target, "ngram:k=6")) is None


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_front_end_refuses_a_memory_of_another_pair(tmp_path: Path, target: Path) -> None:
    from vllm.engine.arg_utils import EngineArgs

    from specplug.plugins.vllm_smc.settings import check_vllm_config

    other = {**_calibrated(target, "ngram"), "target": "f" * 16, "about": "target some-other-model (X, 2 layers)"}
    path = _memory(tmp_path, other)
    args = EngineArgs(
        model=str(target), dtype="float32", max_model_len=512, enforce_eager=True,
        speculative_config={"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4},
        additional_config={"specplug": {"method": "csd", "lam": 6, "memory_path": str(path)}},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="another target") as refused:
        check_vllm_config(args.create_engine_config())
    assert "some-other-model" in str(refused.value)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_front_end_hands_the_engine_what_it_decided(tmp_path: Path, target: Path) -> None:
    """memory_optional: a foreign memory is dropped from the engine's settings (the engine starts empty, not with
    the foreign file); lam=auto: the engine is handed the λ, τ and online the calibration curve gave."""
    from vllm.engine.arg_utils import EngineArgs

    from specplug.plugins.vllm_smc.settings import check_vllm_config

    spec = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}
    other = {**_calibrated(target, "ngram"), "target": "f" * 16, "about": "target some-other-model (X, 2 layers)"}
    foreign = _memory(tmp_path, other)
    args = EngineArgs(
        model=str(target), dtype="float32", max_model_len=512, enforce_eager=True, speculative_config=spec,
        additional_config={"specplug": {"method": "csd", "memory_path": str(foreign), "memory_optional": True}},
    )  # fmt: skip
    config = args.create_engine_config()
    check_vllm_config(config)
    assert config.additional_config["specplug"]["memory_path"] is None

    bank = CorrectionMemoryBank.load(_memory(tmp_path, _calibrated(target, "ngram")))
    point = {"lam": 3, "tau": 0.2, "agreement": 0.97, "measure": "exact_match", "acceptance_rate": 0.5}
    bank.metadata["calibrated"] = {"min_agreement": 0.95, "curve": [point]}
    bank.save(tmp_path / "calibrated.json")
    settings = {"method": "csd", "lam": "auto", "memory_path": str(tmp_path / "calibrated.json")}
    args = EngineArgs(
        model=str(target), dtype="float32", max_model_len=512, enforce_eager=True, speculative_config=spec,
        additional_config={"specplug": settings},
    )  # fmt: skip
    config = args.create_engine_config()
    check_vllm_config(config)
    pinned = config.additional_config["specplug"]
    assert (pinned["lam"], pinned["tau"], pinned["online"]) == (3, 0.2, False)


def test_pinning_leaves_a_legacy_config_without_a_specplug_block_alone() -> None:
    """`speculative_config={"model": "specplug.ToolSpec"}` carries no additional_config: nothing to pin, no KeyError
    (CI caught this once)."""
    from types import SimpleNamespace

    from specplug.plugins.vllm_smc.settings import _pin_resolved

    legacy = SimpleNamespace(additional_config={})
    _pin_resolved(legacy, {}, SimpleNamespace(memory_path=None, lam=6.0))
    assert legacy.additional_config == {}
