"""Stand-ins for the bench tests: a recording engine and a patched `specplug bench` entry (named as stand-ins).

These tests check the harness, not an engine; the real-engine run is tests/bench/test_bench_vllm.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from specplug.bench import cli as bench_cli
from specplug.bench.measure import ArmRun, RequestRecord
from specplug.bench.workload import Workload
from specplug.cli import main

PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
AR_OUTPUT = {0: [10, 11, 12], 1: [13, 14], 2: [15, 16, 17]}


def make_workload(dataset: str = "mtbench", records: Sequence = ()) -> Workload:
    return Workload(dataset, ["a", "b", "c"], PROMPTS, [[9, 9]], [0], records=list(records), tokenizer_path="x")


class StandInEngine:
    """Stand-in for an engine: returns AR_OUTPUT (or a corrupted copy) and records what each arm received."""

    PROMPTS, AR_OUTPUT = PROMPTS, AR_OUTPUT

    def __init__(self, corrupt: str | None = None, fail: str | None = None) -> None:
        self.seen: dict[str, list[list[int]]] = {}
        self.order: list[str] = []
        self.calls: list[tuple[str, str, list[int]]] = []  # (dataset, arm, concurrencies)
        self.corrupt, self.fail = corrupt, fail

    def __call__(self, settings, arm, model_path, workload: Workload, concurrencies):
        self.seen[arm.label] = workload.prompts
        self.order.append(arm.label)
        self.calls.append((workload.dataset, arm.label, list(concurrencies)))
        self.settings = settings
        if arm.label == self.fail:
            raise RuntimeError("engine worker exited with 1")
        runs = []
        for conc in concurrencies:
            records = []
            for i in range(len(workload.prompts)):
                out = list(AR_OUTPUT[i])
                if arm.label == self.corrupt and i == 1:
                    out[1] += 1
                records.append(RequestRecord(i, out, 0.01, 0.05, len(out) if arm.kind == "ar" else 2))
            spec = arm.kind != "ar"
            runs.append(ArmRun(arm.label, conc, records, 0.5 if spec else 1.0, 4 * spec, 12 * spec, 6 * spec))
        return runs


@pytest.fixture
def stand_in() -> type[StandInEngine]:
    """The stand-in engine class (a fixture, because test modules cannot import conftest under importlib mode)."""
    return StandInEngine


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., int]:
    """`specplug bench` with the model, the workloads (per dataset: `bench.workloads`) and the engine stood in."""
    workloads: dict[str, Workload] = {}
    monkeypatch.setattr("specplug.assets.resolve_model", lambda name: tmp_path / "model")
    monkeypatch.setattr(
        "specplug.bench.workload.build_workload", lambda model, ds, n, **k: workloads.get(ds) or make_workload(ds)
    )

    def run(engine: StandInEngine, *argv: str) -> int:
        monkeypatch.setattr(bench_cli, "_run_arm", engine)
        return main(["bench", "run", *argv])

    run.workloads = workloads  # type: ignore[attr-defined]
    return run
