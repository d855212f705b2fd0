"""CSD settings, validated at startup so that a bad value never reaches a serving loop.

Defaults are the paper's as reported (γ=6 draft tokens, λ=6 observations before a pair is rescuable, τ=0.01:
a rescued token must be at least 1% as likely as the target's top token). `lam = inf` or `tau = 1` turn CSD
back into standard greedy speculative decoding exactly; that is how calibration runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from specplug.core.config import check_integer, settings, with_draft_length
from specplug.core.errors import ConfigError
from specplug.core.persist import DataFileError, check_interval, check_save_path

log = logging.getLogger("specplug")

METHOD = "csd"
MAX_PAIRS_LIMIT = 1 << 26  # 64M pairs: far beyond any vocabulary pair set seen in practice, still fits in RAM


@dataclass(frozen=True)
class CSDConfig:
    lam: float = 6
    tau: float = 0.01
    gamma: int = 6
    max_pairs: int = 1_000_000
    memory_path: str | None = None
    namespace: str = "default"
    online: bool = True
    save_path: str | None = None
    save_interval_s: float = 60.0  # background saves to save_path while serving (0: only at shutdown)

    def __post_init__(self) -> None:
        lam = self.lam
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (lam == math.inf or lam >= 1):
            raise ConfigError("lam", lam, "an integer ≥ 1, or inf (never rescue: standard SD)", method=METHOD)
        if lam != math.inf and lam != int(lam):
            raise ConfigError("lam", lam, "a whole number of observations (or inf)", method=METHOD)
        tau = self.tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 1:
            raise ConfigError("tau", tau, "a probability ratio in (0, 1] (1 = standard SD)", method=METHOD)
        check_integer("gamma", self.gamma, 1, 128, method=METHOD)
        check_integer("max_pairs", self.max_pairs, 1, MAX_PAIRS_LIMIT, method=METHOD)
        if not isinstance(self.namespace, str) or not self.namespace or len(self.namespace) > 200:
            raise ConfigError("namespace", self.namespace, "a non-empty name of at most 200 characters", method=METHOD)
        if not isinstance(self.online, bool):
            raise ConfigError("online", self.online, "true or false", method=METHOD)
        check_interval("save_interval_s", self.save_interval_s, method=METHOD)
        for name in ("memory_path", "save_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(name, value, "a file path, or null", method=METHOD)

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any]) -> CSDConfig:
        """Build from user settings (engine flags, JSON), refusing unknown keys so a typo is not ignored.

        `lam` may be given as the string "inf" (JSON has no infinity).
        """
        merged = settings(METHOD, given, asdict(cls()))
        if isinstance(merged["lam"], str) and merged["lam"].strip().lower() in {"inf", "infinity"}:
            merged["lam"] = math.inf
        return cls(**merged)

    @property
    def rescues(self) -> bool:
        """False when the rule can never rescue (λ=∞ or τ=1 up to exact logit ties): standard greedy SD."""
        return self.lam != math.inf

    @property
    def log_tau(self) -> float:
        return math.log(self.tau)


def check_startup(
    given: Mapping[str, Any],
    *,
    num_speculative_tokens: int | None = None,
    vocab_size: int | None = None,
    pair: Mapping[str, str] | None = None,
) -> CSDConfig:
    """Every check of CSD's settings that needs no engine, as a host's front end runs them before the engine
    starts (and `specplug doctor --config`): the values, `save_path` writable, `memory_path` a whole, checksummed
    CSD memory whose token ids lie in the target's vocabulary and, given the engine's `pair` identity, one
    calibrated for that (target, draft, tokenizer) pair. Raises `ConfigError` naming the setting (and file)."""
    from specplug.core.csd.bank import CorrectionMemoryBank

    merged = with_draft_length(given, "gamma", num_speculative_tokens, method=METHOD)
    config = CSDConfig.from_mapping(merged)
    check_save_path(config.save_path, method=METHOD)
    if config.memory_path is not None:
        try:
            bank = CorrectionMemoryBank.load(config.memory_path, config.max_pairs, vocab_size=vocab_size)
        except DataFileError as exc:
            allowed = f"a valid CSD memory file ({exc.reason})"
            raise ConfigError("memory_path", config.memory_path, allowed, method=METHOD) from None
        check_pair(bank.metadata.get(PAIR_KEY), pair, config.memory_path)
    return config


PAIR_KEY = "pair"  # the memory file's (target, draft, tokenizer) identity, written by `specplug csd calibrate`


def check_pair(recorded: Mapping[str, Any] | None, actual: Mapping[str, str] | None, path: str) -> None:
    """Refuse a memory recorded for another pair; a file without a recorded pair (written before pairs were
    recorded, or by hand) is served with a warning, since nothing says which pair it belongs to."""
    from specplug.core.model_identity import mismatch

    if actual is None:
        return
    if not isinstance(recorded, Mapping):
        log.warning("specplug: CSD memory %s records no (target, draft, tokenizer) pair; serving it unchecked", path)
        return
    why = mismatch(recorded, actual)
    if why is not None:
        allowed = f"a CSD memory for this engine's pair (this one was {why})"
        raise ConfigError("memory_path", path, allowed, method=METHOD)
