"""`specplug doctor --config FILE_OR_JSON`: a method's settings checked with the engine front end's own startup
validators, no engine started; exit 2 with the one-line error on a bad config, 0 on a good one (issue 21, part 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from specplug.cli import main
from specplug.core.csd.bank import CorrectionMemoryBank


def _doctor(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["doctor", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _memory(path: Path, draft: int, target: int) -> Path:
    bank = CorrectionMemoryBank(100)
    bank.memory("default").observe(torch.tensor([draft]), torch.tensor([target]))
    bank.save(path)
    return path


def test_good_settings_exit_0(capsys, tmp_path: Path) -> None:
    memory = _memory(tmp_path / "m.json", 1, 2)
    block = {"specplug": {"method": "csd", "lam": 3, "memory_path": str(memory), "save_path": str(memory)}}
    code, out, err = _doctor(capsys, "--config", json.dumps(block), "--vocab-size", "49152")
    assert code == 0 and err == "" and out.startswith("ok: csd settings are valid")
    code, out, _ = _doctor(capsys, "--config", json.dumps({"method": "smc", "num_particles": 8}), "--json")
    assert code == 0 and json.loads(out)["method"] == "smc"


def test_settings_from_a_file(capsys, tmp_path: Path) -> None:
    config = tmp_path / "specplug.json"
    config.write_text(json.dumps({"method": "toolspec", "num_speculative_tokens": 8}))
    assert _doctor(capsys, "--config", str(config))[0] == 0
    code, _, err = _doctor(capsys, "--config", str(config), "--num-speculative-tokens", "4")
    assert code == 2 and "num_speculative_tokens" in err


@pytest.mark.parametrize(
    ("block", "setting"),
    [
        ({"method": "smc", "trace_path": "/tmp"}, "trace_path"),
        ({"method": "smc", "log_interval_s": "10"}, "log_interval_s"),
        ({"method": "smc", "log_interval_s": -1}, "log_interval_s"),
        ({"method": "csd", "save_path": "/proc/specplug-memory.json"}, "save_path"),
        ({"method": "toolspec", "save_path": "/tmp"}, "save_path"),
        ({"method": "csd", "lam": 0}, "lam"),
        ({"method": "csd", "lamda": 3}, "lamda"),
        ({"method": "nope"}, "method"),
        ({"lam": 3}, "additional_config.specplug"),
    ],
)
def test_bad_settings_exit_2_with_one_line(capsys, block: dict, setting: str) -> None:
    code, out, err = _doctor(capsys, "--config", json.dumps(block))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("specplug doctor: ") and f"setting {setting}=" in err


def test_memory_files_checked_against_the_model_vocabulary(capsys, tmp_path: Path) -> None:
    from specplug.assets import resolve_model

    model = resolve_model("smollm2-135m")
    if not (Path(model) / "config.json").exists():
        pytest.skip("SmolLM2-135M is not pulled here (specplug assets pull smollm2-135m)")
    memory = _memory(tmp_path / "m.json", 49152 + 3, 2)  # one id past SmolLM2's vocabulary, validly signed
    config = json.dumps({"method": "csd", "memory_path": str(memory)})
    assert _doctor(capsys, "--config", config)[0] == 0  # without a vocabulary there is nothing to check ids against
    code, _, err = _doctor(capsys, "--config", config, "--model", str(model))
    assert code == 2 and "memory_path" in err and str(memory) in err and "49155" in err and "vocabulary" in err


def test_memory_fifo_and_nan_refused(capsys, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    code, _, err = _doctor(capsys, "--config", json.dumps({"method": "csd", "memory_path": str(fifo)}))
    assert code == 2 and "FIFO" in err and str(fifo) in err
    nan = _memory(tmp_path / "nan.json", 1, 2)
    nan.write_text(nan.read_text().replace('"metadata":{}', '"metadata":{"x":NaN}'))
    code, _, err = _doctor(capsys, "--config", json.dumps({"method": "csd", "memory_path": str(nan)}))
    assert code == 2 and "NaN" in err and str(nan) in err


def test_unreadable_config_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = _doctor(capsys, "--config", str(tmp_path / "missing.json"))
    assert code == 2 and "--config" in err
    code, _, err = _doctor(capsys, "--config", "{not json")
    assert code == 2 and "--config" in err


def test_console_script_exit_code() -> None:
    exe = shutil.which("specplug", path=os.path.dirname(sys.executable)) or shutil.which("specplug")
    assert exe, "the specplug console script is not installed"
    bad = subprocess.run(
        [exe, "doctor", "--config", '{"method": "smc", "log_interval_s": -1}'], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("specplug doctor: smc: invalid")
    good = subprocess.run([exe, "doctor", "--config", '{"method": "smc"}'], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
