"""Per-session step counters, as a hook implementation: every host's step announcements count the same way.

Registered with the core plugins, so `MethodSession.report()["steps"]` holds the same figures on vLLM, SGLang,
TensorRT-LLM and the reference runner. Method-specific fields (rescued tokens, ESS, resampling) are counted when
the outcome carries them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from specplug.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from specplug.core.host import MethodSession
    from specplug.core.types import StepOutcome

KEY = "steps"


@dataclass
class StepCounters:
    steps: int = 0  # announced verify steps
    drafts: int = 0  # rows with at least one draft token
    proposed: int = 0
    accepted: int = 0  # exact + rescued
    rescued: int = 0
    fallback_steps: int = 0  # steps the host verified with the engine's own rule (outcome.extra["fallback"])
    resampled: int = 0  # SMC-SD: rows whose group resampled
    ess_sum: float = 0.0  # SMC-SD: Σ normalized ESS over rows that report one
    ess_rows: int = 0
    requests_started: int = 0
    requests_finished: int = 0

    def add(self, outcome: StepOutcome) -> None:
        self.steps += 1
        if outcome.extra.get("fallback"):
            self.fallback_steps += 1
        proposed = outcome.num_proposed
        self.drafts += int((proposed > 0).sum())
        self.proposed += int(proposed.sum())
        self.accepted += int(outcome.num_accepted.sum())
        if outcome.num_rescued is not None:
            self.rescued += int(outcome.num_rescued.sum())
        if outcome.resampled is not None:
            self.resampled += int(outcome.resampled.sum())
        if outcome.ess is not None:
            self.ess_sum += float(outcome.ess.sum())
            self.ess_rows += int(outcome.ess.numel())

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def counters(session: MethodSession) -> StepCounters:
    found = session.data.get(KEY)
    if found is None:
        found = session.data[KEY] = StepCounters()
    return found


@hookimpl
def specplug_on_step(outcome: StepOutcome, session: MethodSession | None) -> None:
    if session is not None:
        counters(session).add(outcome)


@hookimpl
def specplug_on_request_start(session: MethodSession | None) -> None:
    if session is not None:
        counters(session).requests_started += 1


@hookimpl
def specplug_on_request_finish(session: MethodSession | None) -> None:
    if session is not None:
        counters(session).requests_finished += 1
