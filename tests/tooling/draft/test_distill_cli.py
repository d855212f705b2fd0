"""`specplug draft` on bad input: one line naming the fix, exit code 2, nothing half-written (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.cli import main


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SPECPLUG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_unknown_target_is_one_line_and_exit_2(cache: Path, capsys) -> None:
    assert main(["draft", "distill", "--target", "no-such-model"]) == 2
    line = _one_line(capsys)
    assert "no-such-model" in line and "known model" in line
    assert not (cache / "drafts").exists() or not any((cache / "drafts").iterdir())


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--layers", "0,x"], "layer indices"),
        (["--layers", "1,1"], "distinct"),
        (["--prompts", "0"], "must be > 0"),
        (["--objective", "reverse"], "invalid choice"),
        (["--lr", "-1"], "must be > 0"),
    ],
)
def test_bad_flags_are_refused_before_anything_runs(cache: Path, capsys, flags: list[str], expected: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["draft", "distill", "--target", "smollm2-135m", *flags])
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def _checkpoint(tmp_path: Path) -> Path:
    model = tmp_path / "target"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"0" * 10)
    return model


def test_a_bad_draft_name_is_refused(cache: Path, tmp_path: Path, capsys) -> None:
    assert main(["draft", "distill", "--target", str(_checkpoint(tmp_path)), "--name", ".hidden"]) == 2
    assert "plain path component" in _one_line(capsys)


def test_an_interrupted_run_with_other_settings_is_not_resumed_silently(cache: Path, tmp_path: Path, capsys) -> None:
    target = _checkpoint(tmp_path)
    work = cache / "drafts" / ".work" / "mine"
    work.mkdir(parents=True)
    (work / "settings.json").write_text(json.dumps({"target": str(target), "layers": [0, 1], "epochs": 9}))
    assert main(["draft", "distill", "--target", str(target), "--name", "mine"]) == 2
    line = _one_line(capsys)
    assert "--restart" in line and "epochs 9 -> 5" in line
    assert json.loads((work / "settings.json").read_text())["epochs"] == 9  # the interrupted run's work is kept


def test_list_says_how_to_make_a_draft_when_there_is_none(cache: Path, capsys) -> None:
    assert main(["draft", "list"]) == 0
    assert "specplug draft distill --target" in capsys.readouterr().out
