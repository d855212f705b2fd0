"""SMC-SD's own metrics on vLLM: effective sample size, resampling, forks, particles per request.

vLLM's stat loggers only see `SchedulerStats`, whose fields are fixed (messages from the engine core are msgspec
structs, which drop extra attributes), so SMC's figures are produced where the decisions are applied, in the
engine-core process: Prometheus metrics (`specplug_smc_*`; they reach a server's `/metrics` when
`PROMETHEUS_MULTIPROC_DIR` is set, as for any multi-process vLLM deployment), a periodic log line, counters in
`snapshot()` and, when `trace_path` is set, one JSON line per group event (for audits and tests).

vLLM's own spec-decode counters stay truthful: every particle row verifies γ drafts and commits all of them, so
vLLM reports an acceptance rate of 1.0 — read it as SMC's commit rate, not as draft quality (ESS is that).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from specplug.core.smc import SMCConfig
from specplug.plugins.vllm_smc.smc_protocol import GroupEvent

log = logging.getLogger("specplug")


@dataclass
class SMCCounters:
    groups_started: int = 0
    groups_finished: int = 0
    groups_failed: int = 0
    cycles: int = 0  # (group, cycle) pairs
    resamples: int = 0  # cycles that resampled
    forks: int = 0  # particle slots that took another lineage and got a new request
    fork_prompt_tokens: int = 0  # lineage tokens placed in fork prompts (served from the prefix cache but the tail)
    ess_sum: float = 0.0  # Σ ESS/N over cycles
    steps: int = 0  # engine steps with scheduled work (one target forward each)
    barrier_steps: int = 0  # steps in which some particles waited for a sibling's prefill
    output_tokens: int = 0
    streamed_tokens: int = 0  # output tokens sent before their request ended (settled: every particle shares them)

    @property
    def resample_rate(self) -> float:
        return self.resamples / self.cycles if self.cycles else 0.0

    @property
    def mean_ess(self) -> float:
        return self.ess_sum / self.cycles if self.cycles else 1.0


class SMCMetrics:
    def __init__(self, config: SMCConfig, trace_path: str | None = None, log_interval_s: float = 10.0) -> None:
        self.config = config
        self.counters = SMCCounters()
        self.log_interval_s = log_interval_s
        self._logged_at = time.monotonic()
        self._trace = Path(trace_path).open("a", encoding="utf-8") if trace_path else None  # noqa: SIM115
        self._prom = _prometheus()

    def group_started(self) -> None:
        self.counters.groups_started += 1
        if self._prom:
            self._prom["particles"].observe(self.config.num_particles)

    def group_finished(self, num_tokens: int) -> None:
        self.counters.groups_finished += 1
        self.counters.output_tokens += num_tokens

    def group_failed(self) -> None:
        self.counters.groups_failed += 1
        if self._prom:
            self._prom["failed"].inc()

    def streamed(self, num_tokens: int) -> None:
        self.counters.streamed_tokens += num_tokens

    def forked(self, prompt_tokens: int) -> None:
        self.counters.forks += 1
        self.counters.fork_prompt_tokens += prompt_tokens
        if self._prom:
            self._prom["forks"].inc()

    def record(self, event: GroupEvent, num_particles: int) -> None:
        c = self.counters
        if event.kind == "cycle":
            c.cycles += 1
            c.resamples += event.resampled
            c.ess_sum += event.ess
            if self._prom:
                self._prom["cycles"].inc()
                self._prom["ess"].observe(event.ess)
                if event.resampled:
                    self._prom["resamples"].inc()
        if self._trace is not None:
            self._trace.write(json.dumps({"t": time.time(), "particles": num_particles, **asdict(event)}) + "\n")
            self._trace.flush()

    def step(self, barrier: bool, worked: bool) -> None:
        self.counters.steps += worked
        self.counters.barrier_steps += barrier
        if time.monotonic() - self._logged_at >= self.log_interval_s:
            self._logged_at = time.monotonic()
            c = self.counters
            if c.cycles:
                log.info(
                    "specplug SMC-SD: %d requests done (%d failed), %d cycles, resample rate %.2f, mean ESS/N %.2f, "
                    "%d forks, %d barrier steps of %d",
                    c.groups_finished,
                    c.groups_failed,
                    c.cycles,
                    c.resample_rate,
                    c.mean_ess,
                    c.forks,
                    c.barrier_steps,
                    c.steps,
                )

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        return {**asdict(c), "resample_rate": c.resample_rate, "mean_ess": c.mean_ess}

    def close(self) -> None:
        if self._trace is not None:
            self._trace.close()
            self._trace = None


def _prometheus() -> dict[str, Any] | None:
    """specplug's Prometheus metrics, created once per process (None when prometheus_client is missing)."""
    global _PROM
    if _PROM is not None:
        return _PROM
    try:
        from prometheus_client import Counter, Histogram
    except ImportError:  # pragma: no cover - vLLM depends on it
        return None
    _PROM = {
        "cycles": Counter("specplug_smc_cycles", "SMC-SD cycles (one per particle group and verify step)"),
        "resamples": Counter("specplug_smc_resamples", "SMC-SD cycles that resampled"),
        "forks": Counter("specplug_smc_forks", "Particle lineages forked into a new vLLM request"),
        "failed": Counter("specplug_smc_failed_requests", "Requests whose particle group ended with an error"),
        "ess": Histogram(
            "specplug_smc_ess_ratio",
            "Effective sample size / N before each resampling decision",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
        ),
        "particles": Histogram(
            "specplug_smc_particles_per_request", "Particles per request", buckets=(1, 2, 4, 8, 16, 32, 64)
        ),
    }
    return _PROM


_PROM: dict[str, Any] | None = None
