"""Build the pluggy plugin manager: hookspecs, the core's own plugin, and every `specplug` entry point.

A broken third-party plugin (import error, misspelled hook) must not take an engine down: it is left out and
recorded in `LoadReport`, which `specplug doctor` prints and turns into a non-zero exit. Tests and tools that
prefer to fail fast pass `strict=True`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from specplug.core import builtin_plugin, heap, hookspecs, metrics
from specplug.core.csd import plugin as csd_plugin
from specplug.core.errors import UnknownMethodError
from specplug.core.smc import plugin as smc_plugin
from specplug.core.toolspec import plugin as toolspec_plugin
from specplug.core.types import MethodInfo, PluginInfo, Proposer, Role, Verifier

ENTRY_POINT_GROUP = "specplug"
# The core's own plugins: standard pieces, step metrics, and one plugin per method (each beside its method's code).
CORE_PLUGINS = {
    "core": builtin_plugin,
    "metrics": metrics,
    "smc": smc_plugin,
    "csd": csd_plugin,
    "toolspec": toolspec_plugin,
    "heap": heap,
}
log = logging.getLogger("specplug")


@dataclass
class LoadReport:
    """Which plugins were loaded from entry points, and which failed and why."""

    loaded: dict[str, str] = field(default_factory=dict)  # entry-point name -> distribution "name version"
    failed: dict[str, str] = field(default_factory=dict)  # entry-point name -> error message


class SpecplugPluginManager(pluggy.PluginManager):
    """pluggy's manager plus the load report and typed helpers for the selector hooks."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.load_report = LoadReport()

    def register_checked(self, plugin: object, name: str | None = None, *, strict: bool = False) -> bool:
        """Register `plugin` and reject it if it declares a `specplug_*` hook that no spec knows (a typo)."""
        self.register(plugin, name=name)
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            self.unregister(plugin)
            if strict:
                raise
            self.load_report.failed[name or repr(plugin)] = f"invalid hook: {exc}"
            log.error("specplug: plugin %s rejected: %s", name, exc)
            return False
        return True

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP, *, strict: bool = False) -> None:
        for ep in _entry_points(group):
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
            try:
                plugin = ep.load()
            except Exception as exc:
                if strict:
                    raise
                self.load_report.failed[ep.name] = f"import failed ({dist}): {type(exc).__name__}: {exc}"
                log.error("specplug: cannot load plugin %s from %s: %s", ep.name, dist, exc)
                continue
            if self.register_checked(plugin, name=ep.name, strict=strict):
                self.load_report.loaded[ep.name] = dist

    # --- typed helpers --------------------------------------------------------------------------------------

    def plugin_infos(self) -> list[PluginInfo]:
        return list(self.hook.specplug_plugin_info())

    def methods(self, role: Role | None = None) -> list[MethodInfo]:
        found = [m for info in self.plugin_infos() for m in info.methods]
        return [m for m in found if role is None or m.role == role]

    def make_proposer(self, method: str, config: Mapping[str, Any] | None = None) -> Proposer:
        made = self.hook.specplug_make_proposer(method=method, config=dict(config or {}), session=None)
        if made is None:
            raise UnknownMethodError("proposer", method, self._names("proposer"))
        return made

    def make_verifier(self, method: str, config: Mapping[str, Any] | None = None) -> Verifier:
        made = self.hook.specplug_make_verifier(method=method, config=dict(config or {}), session=None)
        if made is None:
            raise UnknownMethodError("verifier", method, self._names("verifier"))
        return made

    def make_memory(self, kind: str, config: Mapping[str, Any] | None = None) -> Any:
        made = self.hook.specplug_make_memory(kind=kind, config=dict(config or {}), session=None)
        if made is None:
            raise UnknownMethodError("memory", kind, self._names("memory"))
        return made

    def _names(self, role: Role) -> Iterable[str]:
        return {m.name for m in self.methods(role) if m.status != "planned"}


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=group), key=lambda ep: ep.name)


def create_plugin_manager(*, load_entry_points: bool = True, strict: bool = False) -> SpecplugPluginManager:
    """A fresh manager with the core plugin and, unless told otherwise, every installed specplug plugin."""
    pm = SpecplugPluginManager()
    for name, plugin in CORE_PLUGINS.items():
        pm.register_checked(plugin, name=name, strict=True)
    if load_entry_points:
        pm.load_entry_points(strict=strict)
    return pm


_shared: SpecplugPluginManager | None = None
_shared_lock = threading.Lock()


def get_plugin_manager() -> SpecplugPluginManager:
    """The process-wide manager, built on first use (engines call their bootstrap in several processes)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = create_plugin_manager()
        return _shared


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests)."""
    global _shared
    with _shared_lock:
        _shared = None
