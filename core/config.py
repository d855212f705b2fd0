"""Method settings: merge user values over defaults and refuse unknown keys (a typo must not be ignored)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from specplug.core.errors import ConfigError


def settings(method: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(unknown[0], given[unknown[0]], f"one of {', '.join(sorted(defaults))}", method=method)
    return {**defaults, **given}
