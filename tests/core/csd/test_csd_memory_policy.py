"""A CSD memory file the server cannot trust is refused at startup with one line naming the setting and the file,
unless the operator asked to serve without it (`memory_optional`); a calibrated memory serves its budget.

Refused: corrupt, foreign (another pair), larger than `max_file_mib` (before reading), or holding more pairs
than `max_pairs` (evicting silently would serve another memory than the one calibrated).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.csd.budget import calibrated_choice
from specplug.core.csd.config import PAIR_KEY, CSDConfig, check_startup
from specplug.core.csd.plugin import load_bank
from specplug.core.errors import ConfigError


def _bank_file(tmp_path: Path, pairs: int = 3, name: str = "ocm.json", **metadata) -> Path:
    bank = CorrectionMemoryBank(max_pairs=1000, metadata=metadata)
    bank.memory("default").observe(torch.arange(pairs), torch.arange(pairs) + 100)
    path = tmp_path / name
    bank.save(path)
    return path


def _corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    path.write_text('{"format": "specplug-data", "kind": "csd-memo')
    return path


@pytest.mark.parametrize("case", ["corrupt", "oversized_bytes", "too_many_pairs", "missing"])
def test_a_bad_memory_stops_startup_naming_the_file(tmp_path: Path, case: str) -> None:
    settings: dict = {"lam": 6}
    if case == "corrupt":
        settings["memory_path"], why = str(_corrupt(tmp_path)), "not a complete JSON document"
    elif case == "oversized_bytes":
        settings |= {"memory_path": str(_bank_file(tmp_path)), "max_file_mib": 1e-4}
        why = "more than the limit"
    elif case == "too_many_pairs":
        settings |= {"memory_path": str(_bank_file(tmp_path, pairs=40)), "max_pairs": 16}
        why = "holds 40 pairs, more than max_pairs 16"
    else:
        settings["memory_path"], why = str(tmp_path / "nowhere.json"), "cannot read it"
    with pytest.raises(ConfigError, match="memory_path") as refused:
        check_startup(settings)
    assert why in str(refused.value) and settings["memory_path"] in str(refused.value)
    with pytest.raises(ConfigError, match=why):
        load_bank(CSDConfig.from_mapping(settings))


def test_memory_optional_serves_without_a_bad_memory_and_says_so(tmp_path: Path, caplog) -> None:
    settings = {"lam": 6, "memory_path": str(_corrupt(tmp_path)), "memory_optional": True}
    with caplog.at_level(logging.ERROR, logger="specplug"):
        config = check_startup(settings)
    assert config.memory_path is None  # what the engine is handed: start with an empty memory
    assert "serving without it" in caplog.text and settings["memory_path"] in caplog.text
    bank = load_bank(CSDConfig.from_mapping(settings))  # the engine side of the same decision
    assert bank.summary() == {} or all(v.get("pairs", 0) == 0 for v in bank.summary().values())


def test_memory_optional_drops_a_memory_of_another_pair(tmp_path: Path, caplog) -> None:
    recorded = {"target": "a" * 16, "draft": "none", "tokenizer": "b" * 16, "about": "target other"}
    path = _bank_file(tmp_path, **{PAIR_KEY: recorded})
    actual = {**recorded, "target": "c" * 16, "about": "target this"}
    with pytest.raises(ConfigError, match="another target"):
        check_startup({"memory_path": str(path)}, pair=actual)
    with caplog.at_level(logging.ERROR, logger="specplug"):
        assert check_startup({"memory_path": str(path), "memory_optional": True}, pair=actual).memory_path is None
    assert "another target" in caplog.text


def _calibrated(tmp_path: Path, budget: float = 0.95) -> Path:
    curve = [
        {"lam": 2, "tau": 0.01, "agreement": 0.81, "measure": "functional_agreement", "acceptance_rate": 0.61},
        {"lam": 2, "tau": 0.3, "agreement": 0.94, "measure": "functional_agreement", "acceptance_rate": 0.55},
        {"lam": 8, "tau": 0.3, "agreement": 0.97, "measure": "functional_agreement", "acceptance_rate": 0.50},
        {"lam": 16, "tau": 0.3, "agreement": 1.0, "measure": "functional_agreement", "acceptance_rate": 0.47},
    ]
    return _bank_file(tmp_path, calibrated={"min_agreement": budget, "lam": 8, "tau": 0.3, "curve": curve})


@pytest.mark.parametrize("budget", [0.0, 0.5, 0.8, 0.9, 0.94, 0.95, 0.97, 0.99, 1.0])
def test_lam_auto_never_serves_a_point_below_its_budget(tmp_path: Path, budget: float) -> None:
    """Every budget gets a point whose measured agreement on the calibration prompts is at least the budget (or
    the lossless rule), and the most accepting such point."""
    path = _calibrated(tmp_path)
    config = CSDConfig.from_mapping({"lam": "auto", "memory_path": str(path), "min_agreement": budget})
    choice = calibrated_choice(CorrectionMemoryBank.load(path).metadata, budget)
    assert choice is not None and choice["agreement"] >= budget
    assert (config.lam, config.tau) == (choice["lam"], choice["tau"])
    assert not config.online  # frozen: learning would move the agreement the budget measured
    if budget <= 0.81:
        assert (config.lam, config.tau) == (2, 0.01)
    if budget == 1.0:
        assert config.lam in (16, math.inf)


def test_lam_auto_settings_errors(tmp_path: Path) -> None:
    path = _calibrated(tmp_path)
    assert CSDConfig.from_mapping({"lam": "auto", "memory_path": str(path)}).lam == 8  # the calibrated budget
    assert CSDConfig.from_mapping({"lam": "auto", "memory_path": str(path), "online": True}).online
    with pytest.raises(ConfigError, match="tau"):
        CSDConfig.from_mapping({"lam": "auto", "memory_path": str(path), "tau": 0.1})
    with pytest.raises(ConfigError, match="min_agreement"):
        CSDConfig.from_mapping({"lam": 6, "min_agreement": 0.9})
    with pytest.raises(ConfigError, match="min_agreement"):
        CSDConfig.from_mapping({"lam": "auto", "memory_path": str(path), "min_agreement": 1.5})
    plain = _bank_file(tmp_path, name="plain.json")
    with pytest.raises(ConfigError, match="calibrated with a budget"):
        CSDConfig.from_mapping({"lam": "auto", "memory_path": str(plain)})
    # A refused file under memory_optional serves lossless (λ = ∞) rather than guessing a λ.
    corrupt = _corrupt(tmp_path)
    config = CSDConfig.from_mapping({"lam": "auto", "memory_path": str(corrupt), "memory_optional": True})
    assert config.lam == math.inf


def test_a_budget_is_checked_against_a_lower_confidence_bound_not_a_lucky_sample() -> None:
    """16 of 16 calibration prompts agreeing assures 0.86 at 95% (Wilson): a 0.95 budget is then served lossless,
    a 0.85 budget gets the point; 64 of 64 assure 0.96."""
    from specplug.core.csd.budget import choose, wilson_lower

    assert wilson_lower(1.0, 16) == pytest.approx(0.855, abs=1e-3)
    assert wilson_lower(0.875, 16) == pytest.approx(0.684, abs=1e-3)
    assert wilson_lower(1.0, 64) == pytest.approx(0.959, abs=1e-3)
    point = {"lam": 16, "tau": 0.1, "agreement": 1.0, "prompts": 16, "measure": "functional_agreement"}
    assert choose([point], 0.95)["lam"] == "inf"
    assert choose([point], 0.85)["lam"] == 16
    assert choose([{**point, "prompts": 64}], 0.95)["lam"] == 16
    assert choose([point], 0.95, confidence=None)["lam"] == 16  # the bare rate, as older curves are read


def test_an_older_curve_is_bounded_by_its_recorded_sweep_size(tmp_path: Path) -> None:
    curve = [{"lam": 16, "tau": 0.1, "agreement": 1.0, "measure": "functional_agreement", "acceptance_rate": 0.6}]
    path = _bank_file(tmp_path, calibrated={"min_agreement": 0.95, "sweep_prompts": 16, "curve": curve})
    assert CSDConfig.from_mapping({"lam": "auto", "memory_path": str(path)}).lam == math.inf
    assert CSDConfig.from_mapping({"lam": "auto", "memory_path": str(path), "min_agreement": 0.85}).lam == 16
