"""`specplug <group> <verb>`: the groups and their verbs, the commands of earlier releases as aliases that say what
they are now, one error path for bad settings, and commands that share pieces instead of each other's helpers."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specplug.cli import main

PACKAGE = Path(__file__).resolve().parents[2] / "specplug"
VERBS = {
    "assets": {"pull", "list", "path"},
    "bench": {"run", "smc-report", "smc-ab", "overhead"},
    "smc": {"settings"},
    "csd": {"settings", "calibrate"},
    "toolspec": {"settings", "remember"},
}


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_group_offers_its_verbs(capsys) -> None:
    top = _help(capsys)
    for group in ("doctor", *VERBS):
        assert f"    {group} " in top
    for group, verbs in VERBS.items():
        text = _help(capsys, group)
        listed = {line.split()[0] for line in text.splitlines() if line.startswith("    ") and line.split()}
        assert verbs <= listed, (group, listed)


@pytest.mark.parametrize(
    ("typed", "old", "new", "module", "expected"),
    [
        (["smc-report", "--repeats", "1"], "smc-report", "bench smc-report", "smc_report", {"repeats": 1}),
        (["-v", "smc-ab", "--gamma", "2"], "smc-ab", "bench smc-ab", "smc_ab", {"gamma": 2, "verbose": True}),
        (["smc-overhead", "--groups", "2"], "smc-overhead", "bench overhead --method smc", "overhead", {"groups": 2}),
        (["csd", "overhead", "--batch", "4"], "csd overhead", "bench overhead --method csd", "overhead", {"batch": 4}),
        (
            ["toolspec", "overhead", "--k", "4"],
            "toolspec overhead",
            "bench overhead --method toolspec",
            "overhead",
            {"k": 4},
        ),
        (["bench", "--arms", "ar"], "bench", "bench run", "cli", {"arms": "ar"}),
    ],
)
def test_earlier_commands_say_once_what_they_are_now_and_run_it(
    typed, old, new, module, expected, monkeypatch, capsys
) -> None:
    seen = []
    monkeypatch.setattr(f"specplug.bench.{module}.run", lambda args: seen.append(args) or 0)
    assert main(typed) == 0
    assert capsys.readouterr().err.splitlines() == [f"specplug: '{old}' is deprecated; use 'specplug {new}'"]
    (args,) = seen
    assert args.command == "bench" and args.argv == typed  # reports record the command as it was typed
    if "--method" in new:
        assert args.method == new.split()[-1]
    for key, value in expected.items():
        assert getattr(args, key) == value


def test_todays_commands_print_no_deprecation(monkeypatch, capsys) -> None:
    seen = []
    monkeypatch.setattr("specplug.bench.overhead.run", lambda args: seen.append(args) or 0)
    assert main(["bench", "overhead", "--method", "csd", "--batch", "4"]) == 0
    assert capsys.readouterr().err == "" and seen[0].batch == 4


def test_an_alias_through_the_console_script() -> None:
    exe = shutil.which("specplug", path=os.path.dirname(sys.executable)) or shutil.which("specplug")
    assert exe, "the specplug console script is not installed"
    out = subprocess.run([exe, "csd", "overhead", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "--method" in out.stdout
    assert out.stderr.strip().splitlines() == [
        "specplug: 'csd overhead' is deprecated; use 'specplug bench overhead --method csd'"
    ]


def test_bad_settings_stop_a_verb_with_one_line_and_code_2(capsys) -> None:
    assert main(["bench", "overhead", "--method", "toolspec", "--pairs", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specplug bench overhead: invalid setting pairs=5") and err.count("\n") == 1
    assert main(["bench", "smc-report", "--overhead-shape", "3,2", "--skip-reference"]) == 2
    assert "invalid setting overhead_shape='3,2'" in capsys.readouterr().err
    assert main(["toolspec", "remember", "--arm", "toolspec:memory=m.json", "--out", "x.json"]) == 2
    assert "a toolspec arm without memory=" in capsys.readouterr().err


@pytest.mark.parametrize(("method", "key"), [("smc", "num_particles"), ("csd", "lam"), ("toolspec", "tool_format")])
def test_method_settings_show_the_defaults(method: str, key: str, capsys) -> None:
    assert main([method, "settings"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["method"] == method and key in shown["defaults"]


def test_smc_report_under_bench(tmp_path) -> None:
    out = tmp_path / "smc"
    args = ["--overhead-shape", "3,2,2", "--vocab", "50", "--repeats", "1", "--skip-reference", "--out", str(out)]
    assert main(["bench", "smc-report", *args]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["command"].startswith("specplug bench smc-report") and results["overhead"]["cycle_ms"] > 0


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("specplug"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_") and a.name[-2:] != "__"]
    return found


def test_no_command_imports_another_commands_private_helpers() -> None:
    modules = [*PACKAGE.glob("*.py"), *PACKAGE.glob("bench/**/*.py")]
    assert modules
    assert {str(m.relative_to(PACKAGE)): _private_imports(m) for m in modules if _private_imports(m)} == {}
