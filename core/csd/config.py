"""CSD settings, validated at startup so that a bad value never reaches a serving loop.

Defaults are the paper's as reported (γ=6 draft tokens, λ=6 observations before a pair is rescuable, τ=0.01:
a rescued token must be at least 1% as likely as the target's top token). `lam = inf` or `tau = 1` turn CSD
back into standard greedy speculative decoding exactly; that is how calibration runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from specplug.core.config import check_integer, settings, with_draft_length
from specplug.core.errors import ConfigError
from specplug.core.persist import MIB, DataFileError, check_interval, check_save_path

if TYPE_CHECKING:
    from specplug.core.csd.bank import CorrectionMemoryBank

log = logging.getLogger("specplug")

METHOD = "csd"
MAX_PAIRS_LIMIT = 1 << 26  # 64M pairs: far beyond any vocabulary pair set seen in practice, still fits in RAM
TENANT_MODES = ("separate", "shared")  # per-tenant learning (`core.csd.tenants`), or one memory for every request


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
    memory_optional: bool = False  # a bad memory_path: serve without it (logged) instead of refusing to start
    max_file_mib: float = 256.0  # a memory file above this is refused before it is read
    min_agreement: float | None = None  # with lam "auto": the budget to choose for (default: the calibrated one)
    tenants: str = "separate"  # "separate": each tenant learns on top of the read-only calibrated memory (tenants)
    max_tenants: int = 64  # tenants that learn; a new one past this reads the calibrated memory and learns nothing
    max_pairs_per_tenant: int = 65_536  # a tenant's own counts (eviction: least frequent, then least recent)
    trust_claimed_tenant: bool = False  # opt-in: names a client only claims (OpenAI `user`) learn as tenants

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
        check_interval("save_interval_s", self.save_interval_s, method=METHOD)
        if self.tenants not in TENANT_MODES:
            raise ConfigError("tenants", self.tenants, " or ".join(f'"{m}"' for m in TENANT_MODES), method=METHOD)
        check_integer("max_tenants", self.max_tenants, 1, 4096, method=METHOD)
        check_integer("max_pairs_per_tenant", self.max_pairs_per_tenant, 1, MAX_PAIRS_LIMIT, method=METHOD)
        for name in ("online", "memory_optional", "trust_claimed_tenant"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "true or false", method=METHOD)
        mib = self.max_file_mib
        if isinstance(mib, bool) or not isinstance(mib, (int, float)) or not 0 < mib <= 1 << 20:
            raise ConfigError("max_file_mib", mib, "a size in MiB in (0, 1048576]", method=METHOD)
        budget = self.min_agreement
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget <= 1
        ):
            raise ConfigError("min_agreement", budget, "a fraction in [0, 1], with lam: auto", method=METHOD)
        for name in ("memory_path", "save_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(name, value, "a file path, or null", method=METHOD)

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any]) -> CSDConfig:
        """Build from user settings (engine flags, JSON), refusing unknown keys so a typo is not ignored.

        `lam` may be given as the string "inf" (JSON has no infinity), or "auto": λ and τ are then chosen from the
        curve that `specplug csd calibrate --min-agreement` recorded in `memory_path` (for `min_agreement`, default
        the calibrated budget), and the memory is served frozen (`online` false unless given): learning while
        serving would move the agreement the budget measured.
        """
        merged = settings(METHOD, given, asdict(cls()))
        lam = merged["lam"]
        if isinstance(lam, str) and lam.strip().lower() in {"inf", "infinity"}:
            merged["lam"] = math.inf
        elif isinstance(lam, str) and lam.strip().lower() == "auto":
            if "tau" in given:
                raise ConfigError(
                    "tau", given["tau"], "unset with lam: auto (the calibration chooses τ)", method=METHOD
                )
            merged["lam"], merged["tau"] = _calibrated(merged)
            if "online" not in given:
                merged["online"] = False
        elif merged["min_agreement"] is not None:
            raise ConfigError("min_agreement", merged["min_agreement"], "set only with lam: auto", method=METHOD)
        return cls(**merged)

    @property
    def rescues(self) -> bool:
        """False when the rule can never rescue (λ=∞ or τ=1 up to exact logit ties): standard greedy SD."""
        return self.lam != math.inf

    @property
    def log_tau(self) -> float:
        return math.log(self.tau)


def _calibrated(merged: Mapping[str, Any]) -> tuple[float, float]:
    """(λ, τ) that the memory file's calibration curve gives for the budget; λ = ∞ (lossless) when the file is
    refused and `memory_optional` lets the server go on without it."""
    from specplug.core.csd.budget import calibrated_choice

    path, budget = merged.get("memory_path"), merged.get("min_agreement")
    if not path:
        raise ConfigError(
            "lam", "auto", "auto only with memory_path (a memory calibrated with --min-agreement)", method=METHOD
        )
    bank = load_memory_file(
        path,
        merged.get("max_pairs", 1_000_000),
        merged.get("max_file_mib", 256.0),
        merged.get("memory_optional", False),
    )
    if bank is None:
        return math.inf, 1.0
    chosen = calibrated_choice(
        bank.metadata, budget if isinstance(budget, (int, float)) and not isinstance(budget, bool) else None
    )
    if chosen is None:
        allowed = "a memory calibrated with a budget (`specplug csd calibrate --min-agreement`) for lam: auto"
        raise ConfigError("memory_path", path, allowed, method=METHOD)
    log.info(
        "specplug: CSD lam=auto: λ=%s τ=%s for budget %.2f (%s %.3f measured on the calibration prompts)",
        chosen["lam"],
        chosen["tau"],
        chosen["min_agreement"],
        chosen.get("measure", "agreement"),
        chosen["agreement"],
    )
    return chosen["lam"], chosen["tau"]


def load_memory_file(
    path: str, max_pairs: int, max_file_mib: float, optional: bool, vocab_size: int | None = None
) -> CorrectionMemoryBank | None:
    """The bank in `path`; a bad file (corrupt, foreign, oversized, unreadable) raises a `ConfigError` naming the
    setting and the reason, or — with `memory_optional` — is logged as an error and None is returned."""
    from specplug.core.csd.bank import CorrectionMemoryBank

    try:
        return CorrectionMemoryBank.load(path, max_pairs, vocab_size=vocab_size, max_bytes=int(max_file_mib * MIB))
    except DataFileError as exc:
        if not optional:
            raise ConfigError("memory_path", path, f"a valid CSD memory file ({exc.reason})", method=METHOD) from None
        log.error("specplug: CSD memory_path %s refused (%s); serving without it (memory_optional)", path, exc.reason)
        return None


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
    merged = with_draft_length(given, "gamma", num_speculative_tokens, method=METHOD)
    config = CSDConfig.from_mapping(merged)
    check_save_path(config.save_path, method=METHOD)
    if config.memory_path is not None:
        bank = load_memory_file(
            config.memory_path, config.max_pairs, config.max_file_mib, config.memory_optional, vocab_size
        )
        if bank is not None:
            try:
                check_pair(bank.metadata.get(PAIR_KEY), pair, config.memory_path)
            except ConfigError as exc:
                if not config.memory_optional:
                    raise
                log.error("specplug: %s; serving without it (memory_optional)", exc)
                bank = None
        if bank is None:  # refused under memory_optional: the engine starts with an empty memory
            return replace(config, memory_path=None)
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
