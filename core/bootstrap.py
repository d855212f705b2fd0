"""Shared logic of the engine entry points (`vllm.general_plugins`, `sglang.srt.plugins`).

Engines run their general plugins once in *every* process (front-end, engine core, each worker), and may run
them again; specplug may also be installed where the engine is not, or beside an engine version we never tested.
So a bootstrap is idempotent per process, lazy (imports nothing heavy until it runs), does nothing when its
engine is absent or SPECPLUG_DISABLE=1, refuses to patch an untested engine version, and never raises into the
engine: a failure is logged and kept in `state`, and a specplug method that needs the bootstrap checks it when
the user selects that method, so the error surfaces at startup with its cause.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from specplug.core.engines import engine_status, untested_allowed

log = logging.getLogger("specplug")
DISABLE_ENV = "SPECPLUG_DISABLE"

Installer = Callable[[], None]


class EngineBootstrap:
    """One engine's bootstrap. `installer` applies that engine's registrations and patches."""

    def __init__(self, engine: str, installer: Installer) -> None:
        self.engine = engine
        self._installer = installer
        self._lock = threading.Lock()
        self.state = "not-run"
        self.detail = ""

    def __call__(self) -> str:
        with self._lock:
            if self.state != "not-run":
                return self.state
            self.state, self.detail = self._run()
            level = logging.WARNING if self.state in {"untested-version", "failed"} else logging.DEBUG
            log.log(level, "specplug %s bootstrap: %s %s", self.engine, self.state, self.detail)
            return self.state

    def _run(self) -> tuple[str, str]:
        if os.environ.get(DISABLE_ENV, "") in {"1", "true", "yes"}:
            return "disabled", f"{DISABLE_ENV} is set"
        status = engine_status(self.engine)
        if not status.installed:
            return "engine-absent", f"{self.engine} is not installed"
        if not status.tested and not untested_allowed():
            return "untested-version", (
                f"{status.distribution}=={status.version} is untested (tested: {status.tested_versions}); "
                "specplug methods stay off (SPECPLUG_ALLOW_UNTESTED=1 to try)"
            )
        try:
            self._installer()
        except Exception as exc:
            log.exception("specplug %s bootstrap failed", self.engine)
            return "failed", f"{type(exc).__name__}: {exc}"
        return "loaded", f"{status.distribution}=={status.version}"

    def reset(self) -> None:
        """Forget that it ran (tests)."""
        with self._lock:
            self.state, self.detail = "not-run", ""
