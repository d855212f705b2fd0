"""SMC-SD settings, validated at startup so that a bad value never reaches a serving loop.

Defaults follow the authors' engine (`SMCEngine`): N=4 particles, γ=4 draft tokens, draft temperature 0.7,
target temperature 1.0, ESS threshold 0.5, power α=1 (plain target sampling), systematic resampling. The output
rule defaults to a posterior sample ∝ exp(log-weight), the current reference behaviour; `argmax` is the rule of
the paper-time release.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from specplug.core.config import check_integer, settings, with_draft_length
from specplug.core.errors import ConfigError

METHOD = "smc"
RESAMPLE_METHODS = ("systematic", "multinomial")
OUTPUT_RULES = ("posterior", "argmax")
MAX_PARTICLES = 1024  # beyond this the per-request batch no longer fits any engine's scheduler limits


@dataclass(frozen=True)
class SMCConfig:
    num_particles: int = 4
    gamma: int = 4
    draft_temperature: float = 0.7
    target_temperature: float = 1.0
    resample_threshold: float = 0.5
    alpha: float = 1.0
    resample_method: str = "systematic"
    output_rule: str = "posterior"

    def __post_init__(self) -> None:
        check_integer("num_particles", self.num_particles, 1, MAX_PARTICLES, method=METHOD)
        check_integer("gamma", self.gamma, 1, 64, method=METHOD)
        _positive(
            "draft_temperature",
            self.draft_temperature,
            "> 0 (a greedy draft makes q a point mass and the importance weights meaningless)",
        )
        _positive("target_temperature", self.target_temperature, "> 0 (SMC-SD samples; use greedy SD for T=0)")
        _positive("alpha", self.alpha, "> 0 (1 = plain target sampling, > 1 sharpens)")
        t = self.resample_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
            raise ConfigError("resample_threshold", t, "a number in [0, 1] (0 = never resample)", method=METHOD)
        if self.resample_method not in RESAMPLE_METHODS:
            raise ConfigError("resample_method", self.resample_method, " or ".join(RESAMPLE_METHODS), method=METHOD)
        if self.output_rule not in OUTPUT_RULES:
            raise ConfigError("output_rule", self.output_rule, " or ".join(OUTPUT_RULES), method=METHOD)

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any]) -> SMCConfig:
        """Build from user settings (engine flags, JSON), refusing unknown keys so a typo is not ignored."""
        return cls(**settings(METHOD, given, asdict(cls())))

    @property
    def block_size(self) -> int:
        """Tokens every live particle commits per cycle: γ drafts plus the bonus."""
        return self.gamma + 1


def _positive(name: str, value: Any, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(name, value, allowed, method=METHOD)


def check_startup(
    given: Mapping[str, Any], *, num_speculative_tokens: int | None = None, vocab_size: int | None = None
) -> SMCConfig:
    """SMC-SD's settings checked without an engine (`specplug doctor --config`); γ is the engine's draft length
    when the host knows it. Raises `ConfigError` naming the setting."""
    merged = with_draft_length(given, "gamma", num_speculative_tokens, method=METHOD)
    return SMCConfig.from_mapping(merged)
