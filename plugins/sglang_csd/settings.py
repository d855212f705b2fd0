"""CSD settings on SGLang: where they come from and the startup checks that refuse a bad combination.

SGLang has no free-form plugin-settings flag (its `ServerArgs` is a closed record), so the settings live in a file
named by the environment variable `SPECPLUG_CSD_CONFIG` (JSON or TOML; an inline JSON object also works), which
every SGLang process inherits from the launcher. The tree size is SGLang's own `--speculative-num-draft-tokens`
(γ + 1: the root plus γ draft nodes); `gamma` in the file is optional and must agree with it. Everything here reads
attributes only, so it checks SGLang's real `ServerArgs`, its resolution recorder, or a plain object alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specplug.core.csd.config import METHOD, CSDConfig
from specplug.core.errors import ConfigError

ALGORITHM = "CSD"  # --speculative-algorithm CSD (SGLang upper-cases the flag)
# The one table of method names in this package: SGLang's algorithm name -> the specplug method whose session
# (`core.host.MethodSession`) serves it. That method's verifier judges SGLang's verify tree (`runtime`).
METHODS: dict[str, str] = {ALGORITHM: "csd_tree"}
CONFIG_ENV = "SPECPLUG_CSD_CONFIG"
# Keys of the settings file that belong to the SGLang glue, not to the engine-free CSDConfig.
GLUE_DEFAULTS: dict[str, Any] = {}  # none today: `save_interval_s` is CSD's own setting (core.csd.config)
DEFAULT_NUM_DRAFT_TOKENS = 12  # SGLang's own NGRAM default (speculative_hook.py:1310-1314)


@dataclass(frozen=True)
class CSDSettings:
    """Validated settings of one SGLang deployment.

    explicit: the keys the user wrote (so `gamma` can be told apart from its default).
    """

    config: CSDConfig = field(default_factory=CSDConfig)
    source: str = "defaults"
    explicit: frozenset[str] = frozenset()

    @property
    def save_interval_s(self) -> float:
        """Seconds between background saves of the memory to `save_path` (0: only at shutdown)."""
        return self.config.save_interval_s


def load_settings(environ: Mapping[str, str] | None = None) -> CSDSettings:
    """Settings named by `SPECPLUG_CSD_CONFIG` (defaults when unset); a bad file or value raises ConfigError."""
    value = (os.environ if environ is None else environ).get(CONFIG_ENV, "").strip()
    if not value:
        return CSDSettings()
    given, source = _read_source(value)
    return settings_from_mapping(given, source=source)


def settings_from_mapping(given: Mapping[str, Any], *, source: str = "mapping") -> CSDSettings:
    if not isinstance(given, Mapping):
        raise ConfigError(CONFIG_ENV, source, "a JSON/TOML object of CSD settings", method=METHOD)
    core = dict(given)
    glue = {key: core.pop(key) for key in list(core) if key in GLUE_DEFAULTS}
    del glue
    return CSDSettings(config=CSDConfig.from_mapping(core), source=source, explicit=frozenset(given))


def method_config(settings: CSDSettings, *, gamma_from_engine: bool, saver: bool) -> dict[str, Any]:
    """The method settings a session is opened with: the validated file, less what the engine decides.

    gamma_from_engine: the tree size is known (`--speculative-num-draft-tokens`, checked against `gamma` by
        `check_server_args`), so the session takes γ from its facts instead.
    saver: this rank writes `save_path`; on every other rank the setting is dropped (one file, one writer).
    """
    given = asdict(settings.config)
    if gamma_from_engine:
        given.pop("gamma")
    if not saver:
        given["save_path"] = None
    return given


def _read_source(value: str) -> tuple[Any, str]:
    if value.startswith("{"):
        try:
            return json.loads(value), f"${CONFIG_ENV} (inline JSON)"
        except json.JSONDecodeError as exc:
            raise ConfigError(CONFIG_ENV, value, f"a JSON object ({exc})", method=METHOD) from None
    path = Path(value)
    try:
        text = path.read_text()
    except OSError as exc:
        allowed = "a readable JSON or TOML settings file, or an inline JSON object"
        raise ConfigError(CONFIG_ENV, value, f"{allowed} ({exc.strerror or exc})", method=METHOD) from None
    if path.suffix.lower() == ".toml":
        import tomllib  # Python ≥ 3.11, which is what SGLang's wheels need anyway

        try:
            return tomllib.loads(text), str(path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(CONFIG_ENV, value, f"a valid TOML file ({exc})", method=METHOD) from None
    try:
        return json.loads(text), str(path)
    except json.JSONDecodeError as exc:
        raise ConfigError(CONFIG_ENV, value, f"a valid JSON file, or a .toml file ({exc})", method=METHOD) from None


def default_num_draft_tokens(settings: CSDSettings) -> int:
    """What `--speculative-num-draft-tokens` becomes when the user left it unset: γ + 1 if the file names γ."""
    return settings.config.gamma + 1 if "gamma" in settings.explicit else DEFAULT_NUM_DRAFT_TOKENS


def check_server_args(server_args: Any, settings: CSDSettings, *, num_draft_tokens: int | None = None) -> None:
    """Refuse SGLang settings CSD cannot honour; each error names the flag, the value and what is allowed.

    `num_draft_tokens` overrides the flag's value (the worker passes the resolved one it runs with).
    """
    n = num_draft_tokens if num_draft_tokens is not None else getattr(server_args, "speculative_num_draft_tokens", None)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError("--speculative-num-draft-tokens", n, "an integer ≥ 2 (the root + γ ≥ 1)", method=METHOD)
        if "gamma" in settings.explicit and settings.config.gamma != n - 1:
            allowed = f"omitted, or --speculative-num-draft-tokens − 1 = {n - 1} (SGLang's flag sets the tree size)"
            raise ConfigError("gamma", settings.config.gamma, allowed, method=METHOD)
    if getattr(server_args, "speculative_use_rejection_sampling", False):
        raise ConfigError(
            "--speculative-use-rejection-sampling", True, "off: CSD calibrates greedy verification", method=METHOD
        )
    dp = getattr(server_args, "dp_size", 1) or 1
    if settings.config.save_path is not None and dp > 1:
        allowed = "unset when --dp-size > 1 (each data-parallel rank learns its own memory; one file cannot hold them)"
        raise ConfigError("save_path", settings.config.save_path, allowed, method=METHOD)
