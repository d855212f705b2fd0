"""Errors users see. Each one names what was wrong and what is allowed, so a bad setting fails at startup."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class SpecplugError(Exception):
    """Base of every error specplug raises on purpose."""


class ConfigError(SpecplugError, ValueError):
    """A method setting is invalid: names the setting, the value given and what is allowed."""

    def __init__(self, setting: str, value: Any, allowed: str, *, method: str | None = None) -> None:
        self.setting, self.value, self.allowed, self.method = setting, value, allowed, method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}invalid setting {setting}={value!r}; allowed: {allowed}")


class UnknownMethodError(SpecplugError, LookupError):
    """No installed plugin provides the requested method."""

    def __init__(self, role: str, method: str, known: Iterable[str]) -> None:
        known_list = ", ".join(sorted(known)) or "none"
        super().__init__(f"no plugin provides {role} {method!r}; installed {role}s: {known_list}")


class PatchError(SpecplugError, RuntimeError):
    """An engine patch could not be applied, was applied twice, or did not take effect."""


class UntestedEngineError(SpecplugError, RuntimeError):
    """The installed engine version is not one specplug was tested with."""
