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
from specplug.core.types import RequestContext, StepOutcome


def _step(session: MethodSession, pairs: list[tuple[int, int]]) -> None:
    session.step(
        StepOutcome(
            request_ids=["r"],
            num_proposed=torch.tensor([len(pairs)]),
            num_accepted=torch.tensor([0]),
            extra={"mismatches": torch.tensor(pairs, dtype=torch.int64), "mismatch_rows": torch.zeros(len(pairs))},
        )
    )


def test_csd_learns_from_step_announcements_and_saves_at_close(tmp_path: Path) -> None:
    path = tmp_path / "ocm.json"
    session = MethodSession("csd", {"save_path": str(path), "save_interval_s": 0}, engine="test")
    session.request_started(RequestContext("r", [1], tenant="acme"))
    _step(session, [(5, 7), (5, 7), (1, 2)])
    assert session.memory.memory("tenant:acme").observations == 3 and not path.exists()  # interval 0: at close
    session.close()
    session.close()  # idempotent
    saved = CorrectionMemoryBank.load(path)
    assert saved.memory("tenant:acme").observations == 3 and saved.memory("default").observations == 0


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


def test_a_save_killed_mid_write_keeps_the_old_file_and_its_leftover_goes_at_the_next_start(
    tmp_path: Path, caplog
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from specplug.core.files import write_atomic

    path = tmp_path / "m.json"
    write_atomic(path, "old complete file")
    # A writer that gets SIGKILL after writing its temporary file and before the rename.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; from specplug.core.files import write_atomic; "
            "os.replace = lambda *a: (print('written', flush=True), time.sleep(600)); "
            "write_atomic(sys.argv[1], 'new file')",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "written"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert path.read_text() == "old complete file"
    (leftover,) = tmp_path.glob(".m.json.*.tmp")
    PeriodicSaver(lambda p: None, str(path), 60.0, "Test")
    assert leftover.exists()  # fresh: it could be another process's write in progress
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    with caplog.at_level(logging.WARNING, logger="specplug"):
        PeriodicSaver(lambda p: None, str(path), 60.0, "Test")
    assert not leftover.exists() and "killed mid-write" in caplog.text
    assert path.read_text() == "old complete file"
