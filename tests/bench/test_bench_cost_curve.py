"""`specplug bench cost-curve` on a tiny random Llama (no assets): every width timed for target and draft, ratios
relative to the target's one-position forward, results.json and report.md written."""

from __future__ import annotations

import json
from pathlib import Path

from specplug.cli import main


def test_cost_curve_times_every_width_for_target_and_draft(monkeypatch, tmp_path: Path, tiny_llama) -> None:
    monkeypatch.setattr("specplug.assets.resolve_model", lambda name: tmp_path / name)
    layers = {"t": 4, "d": 1}
    monkeypatch.setattr("specplug.reference.models.load_causal_lm", lambda path: tiny_llama(layers[path.name]))
    out = tmp_path / "out"
    argv = ["bench", "cost-curve", "--model", "t", "--draft", "d", "--positions", "1,4,2", "--context", "16"]
    assert main([*argv, "--repeats", "3", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["ms"]) == {"target", "draft"}
    assert all(sorted(map(int, widths)) == [1, 2, 4] for widths in results["ms"].values())
    assert all(ms > 0 for widths in results["ms"].values() for ms in widths.values())
    report = (out / "report.md").read_text()
    assert "| 1 | " in report and "| 1.00 |" in report and report.count("\n| ") >= 4
