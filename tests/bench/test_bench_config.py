"""`specplug bench --config FILE`: the same keys as the flags, flags win, unknown keys are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.bench.config import ALLOWED_KEYS, DEFAULTS, load_file, resolve
from specplug.core.errors import ConfigError

GRID = """
engine = "reference"
model = "smollm2-135m"
datasets = ["mtbench", "bfcl:single_turn"]
arms = ["ar", "ngram", "ngram:k=2"]
num_prompts = 3
max_tokens = 32
concurrency = [1, 4]
rounds = 2
out = "{out}"
note = "shared 2-core CPU"
"""


def write(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_values_in_the_flags_syntax(tmp_path: Path) -> None:
    values = load_file(write(tmp_path, GRID.format(out="x")))
    assert values["dataset"] == "mtbench,bfcl:single_turn" and "datasets" not in values
    assert values["arms"] == "ar,ngram,ngram:k=2" and values["concurrency"] == "1,4"
    assert values["num_prompts"] == 3 and values["note"] == "shared 2-core CPU"


def test_defaults_then_file_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'arms = "ar,ngram:k=2"\nconcurrency = 2\nmax_tokens = 8\n')
    cli = dict.fromkeys(DEFAULTS) | {"concurrency": "4"}
    settings = resolve(cli, str(path))
    assert settings["arms"] == "ar,ngram:k=2" and settings["max_tokens"] == 8  # from the file
    assert settings["concurrency"] == "4"  # the flag wins
    assert settings["num_prompts"] == DEFAULTS["num_prompts"]  # neither: the default


def test_json_form(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"dataset": "humaneval", "rounds": 3}), "grid.json")
    assert load_file(path) == {"dataset": "humaneval", "rounds": 3}


def test_unknown_keys_are_named_with_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_file(write(tmp_path, 'arms = "ar"\nmax_token = 8\ntemprature = 0.5\n'))
    message = str(err.value)
    assert "max_token, temprature" in message and all(key in message for key in ALLOWED_KEYS)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('num_prompts = "16"', "num_prompts='16'"),
        ("rounds = true", "rounds=True"),
        ("concurrency = []", "concurrency=[]"),
        ('dataset = "mtbench"\ndatasets = ["bfcl"]', "either dataset or datasets"),
        ("engine = ", "valid TOML"),
    ],
)
def test_bad_values_are_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_file(write(tmp_path, text))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable"):
        load_file(tmp_path / "nope.toml")


def test_grid_runs_every_dataset_into_its_own_folder(bench, stand_in, tmp_path: Path) -> None:
    out = tmp_path / "grid-out"
    path = write(tmp_path, GRID.format(out=out))
    engine = stand_in()
    assert bench(engine, "--config", str(path), "--concurrency", "4") == 0
    assert [c[0] for c in engine.calls] == ["mtbench"] * 6 + ["bfcl:single_turn"] * 6  # 3 arms x 2 rounds each
    assert all(c[2] == [4] for c in engine.calls)  # the flag overrode the file's [1, 4]
    for folder, dataset in (("mtbench", "mtbench"), ("bfcl-single_turn", "bfcl:single_turn")):
        results = json.loads((out / folder / "results.json").read_text())
        assert results["dataset"] == dataset and results["rounds"] == 2 and results["note"] == "shared 2-core CPU"
        assert results["config"]["path"] == str(path) and results["config"]["values"]["max_tokens"] == 32
        assert "--config" in results["command"] and len(results["records"]) == 3 * 2
        assert "shared 2-core CPU" in (out / folder / "report.md").read_text()


def test_a_bad_grid_fails_before_any_arm_runs(bench, stand_in, tmp_path: Path, capsys) -> None:
    engine = stand_in()
    assert bench(engine, "--config", str(write(tmp_path, "arm = 'ar'\n"))) == 2
    assert "arm" in capsys.readouterr().err and engine.calls == []
    assert bench(engine, "--config", str(write(tmp_path, "engine = 'tgi'\n"))) == 2
    assert "engine='tgi'" in capsys.readouterr().err and engine.calls == []


def test_the_documented_example_grid_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "bench" / "grid.example.toml"
    values = load_file(example)
    assert values["dataset"] == "mtbench,bfcl:single_turn,humaneval" and values["concurrency"] == "1,4"
