"""Method settings: merge user values over defaults and refuse unknown keys (a typo must not be ignored), and the
value checks every method's config shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from specplug.core.errors import ConfigError


def settings(method: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(unknown[0], given[unknown[0]], f"one of {', '.join(sorted(defaults))}", method=method)
    return {**defaults, **given}


def check_integer(name: str, value: Any, low: int, high: int, *, method: str) -> None:
    """Refuse anything but an integer in [low, high] (booleans included: `True` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, value, f"an integer in [{low}, {high}]", method=method)


def with_draft_length(
    given: Mapping[str, Any], key: str, num_speculative_tokens: int | None, *, method: str
) -> dict[str, Any]:
    """A method's settings with its draft-length `key` taken from the engine's num_speculative_tokens when the host
    knows it: a different value given by the user is refused (one draft budget, stated once)."""
    merged = dict(given)
    if num_speculative_tokens is None:
        return merged
    if key in merged and merged[key] != num_speculative_tokens:
        allowed = f"omitted, or equal to the engine's num_speculative_tokens ({num_speculative_tokens})"
        raise ConfigError(key, merged[key], allowed, method=method)
    merged[key] = num_speculative_tokens
    return merged
