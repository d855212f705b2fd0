"""`specplug smc-report` runs its overhead measurement and writes a versioned report (tiny shapes, no model)."""

from __future__ import annotations

import json

from specplug.cli import main


def test_smc_report_overhead_only(tmp_path):
    out = tmp_path / "smc"
    args = ["smc-report", "--overhead-shape", "3,2,2", "--vocab", "50", "--repeats", "1", "--skip-reference", "--out"]
    rc = main([*args, str(out)])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    o = results["overhead"]
    assert (o["batch"], o["num_particles"], o["gamma"], o["vocab"]) == (3, 2, 2, 50)
    assert all(o[k] > 0 for k in ("cycle_ms", "logit_work_ms", "bookkeeping_ms", "rejection_sampling_ms"))
    assert results["command"].startswith("specplug smc-report")
    assert "Per-cycle cost" in (out / "report.md").read_text()
