"""Sessions persist what their methods learn: periodic background saves, a final save at the orderly close, a
`save_path` checked at startup, and a failed save logged with its path (never raised into the engine)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.errors import ConfigError
from specplug.core.host import MethodSession
from specplug.core.persist import PeriodicSaver
from specplug.core.types import StepOutcome


def _step(session: MethodSession, pairs: list[tuple[int, int]]) -> None:
    session.step(
        StepOutcome(
            request_ids=["r"],
            num_proposed=torch.tensor([len(pairs)]),
            num_accepted=torch.tensor([0]),
            extra={"mismatches": torch.tensor(pairs, dtype=torch.int64)},
        )
    )


def test_csd_learns_from_step_announcements_and_saves_at_close(tmp_path: Path) -> None:
    path = tmp_path / "ocm.json"
    session = MethodSession("csd", {"save_path": str(path), "save_interval_s": 0}, engine="test")
    _step(session, [(5, 7), (5, 7), (1, 2)])
    assert session.verifier.memory.observations == 3 and not path.exists()  # interval 0: only at close
    session.close()
    session.close()  # idempotent
    assert CorrectionMemoryBank.load(path).memory("default").observations == 3


def test_offline_sessions_do_not_learn(tmp_path: Path) -> None:
    session = MethodSession("csd", {"online": False}, engine="test")
    _step(session, [(5, 7)])
    assert session.verifier.memory.observations == 0


def test_periodic_saves_run_in_the_background_at_the_interval(tmp_path: Path, monkeypatch) -> None:
    import specplug.core.persist as persist

    clock = [100.0]
    monkeypatch.setattr(persist.time, "monotonic", lambda: clock[0])
    saved: list[str] = []
    saver = PeriodicSaver(saved.append, str(tmp_path / "m.json"), 60.0, "Test")
    saver.maybe_save()
    assert saved == []
    clock[0] += 61
    saver.maybe_save()
    saver.close()  # waits for the background save, then writes the final one
    assert saved == [str(tmp_path / "m.json")] * 2


def test_a_failed_save_is_logged_with_its_path(tmp_path: Path, caplog) -> None:
    def broken(path: str) -> None:
        raise OSError("disk full")

    saver = PeriodicSaver(broken, str(tmp_path / "m.json"), 0, "Test")
    with caplog.at_level(logging.ERROR, logger="specplug"):
        assert saver.close() is False
    assert str(tmp_path / "m.json") in caplog.text and "disk full" in caplog.text


@pytest.mark.parametrize("method", ["csd", "toolspec"])
def test_bad_save_settings_are_refused_at_startup(tmp_path: Path, method: str) -> None:
    facts = {"tokenizer": object()} if method == "toolspec" else {}
    with pytest.raises(ConfigError, match="save_path"):
        MethodSession(method, {"save_path": str(tmp_path)}, engine="test", facts=facts)  # a directory
    with pytest.raises(ConfigError, match="save_path"):
        MethodSession(method, {"save_path": str(tmp_path / "no" / "m.json")}, engine="test", facts=facts)
    with pytest.raises(ConfigError, match="save_interval_s"):
        MethodSession(method, {"save_interval_s": -1}, engine="test", facts=facts)
