"""The data SMC-SD's vLLM scheduler and model runner exchange, and nothing else (no vLLM import).

A user request becomes a *particle group*: N ordinary vLLM requests (one per particle slot) that the scheduler
keeps in lockstep. Each particle request carries a `ParticleTag` in `SamplingParams.extra_args` (vLLM's free-form
per-request channel, sent to every worker with the request), so every tensor-parallel rank builds the same group
state from the same facts. The runner answers each step with a list of `GroupEvent`s on the `ModelRunnerOutput`
(attribute `REPORT_ATTR`), from which the scheduler applies fork plans and returns the chosen particle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

EXTRA_ARGS_KEY = "specplug_smc"
REPORT_ATTR = "specplug_smc"
PARTICLE_MARK = "#smc"


def particle_request_id(group: str, slot: int, generation: int) -> str:
    """`{user id}#smc{slot}.{generation}`: a fork of slot s gets generation g+1 (vLLM ids must stay unique)."""
    return f"{group}{PARTICLE_MARK}{slot}.{generation}"


@dataclass(frozen=True)
class ParticleTag:
    """Who a particle request is. `prefix_len` lineage tokens are part of its prompt (0 for slot 0's first
    request); the runner then forces the lineage's next token at the end of its prefill instead of sampling."""

    group: str
    slot: int
    generation: int
    num_particles: int
    seed: int
    max_tokens: int  # the user's budget for the whole lineage
    temperature: float  # the user's temperature = SMC's target temperature
    prompt_len: int  # the user's prompt length
    prefix_len: int
    eos_token_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["eos_token_ids"] = list(self.eos_token_ids)
        return data

    @classmethod
    def from_extra_args(cls, extra_args: dict[str, Any] | None) -> ParticleTag | None:
        data = (extra_args or {}).get(EXTRA_ARGS_KEY)
        if data is None:
            return None
        return cls(**{**data, "eos_token_ids": tuple(data["eos_token_ids"])})

    @property
    def starts_group(self) -> bool:
        return self.slot == 0 and self.generation == 0


@dataclass
class GroupEvent:
    """What the runner did for one group in one step.

    kind "start": slot 0's prefill drew every slot's first token. kind "cycle": one SMC-SD block was weighed and
    committed. kind "error": the group cannot go on (`reason` says why). Start and cycle may carry a resampling
    decision (`dst`/`src`: slot indices, dst continues src's lineage) and, when every particle has finished, the
    group's result (`chosen`, `tokens`, `log_z`).
    """

    group: str
    kind: str
    cycle: int
    ess: float = 1.0  # ESS / N before the resampling decision
    resampled: bool = False
    dst: list[int] = field(default_factory=list)
    src: list[int] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)  # per slot, after this step
    fork_logit_gap: list[float] = field(default_factory=list)  # per fork of the last cycle: max |Δ logits| at pos 0
    fork_context_equal: list[bool] = field(default_factory=list)  # per fork of the last cycle: same tokens
    chosen: int | None = None
    tokens: list[int] | None = None
    log_z: float | None = None
    reason: str | None = None  # kind "error": why the group was ended

    @property
    def ended(self) -> bool:
        return self.chosen is not None
