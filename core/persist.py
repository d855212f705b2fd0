"""Versioned, checksummed, data-only files, written atomically.

Memories outlive processes, so their files are read by code that did not write them: they are plain JSON (never
pickle: loading a file must not be able to run code), carry a `kind` and `version` so a foreign or future file is
refused rather than misread, and a SHA-256 of the canonical payload so a truncated or edited file is refused
rather than half-loaded. Writes are atomic (`core.files.write_atomic`): a crash mid-write leaves the previous
file intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from specplug.core.errors import ConfigError, SpecplugError
from specplug.core.files import write_atomic

FORMAT = "specplug-data"


class DataFileError(SpecplugError, ValueError):
    """A data file is missing, corrupt, tampered with, foreign, or of an unsupported version."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"refusing {path}: {reason}")


def _canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def write_data_file(path: str | os.PathLike[str], kind: str, version: int, payload: Mapping[str, Any]) -> None:
    """Write `payload` atomically; the previous file (if any) stays whole until the rename."""
    body = _canonical(payload)
    document = {
        "format": FORMAT,
        "kind": kind,
        "version": version,
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    head = json.dumps(document, sort_keys=True, separators=(",", ":"))[:-1]
    write_atomic(path, head.encode() + b',"payload":' + body + b"}\n")


def read_data_file(path: str | os.PathLike[str], kind: str, versions: Iterable[int]) -> tuple[int, dict[str, Any]]:
    """Return (version, payload) of a file written by `write_data_file`, or raise `DataFileError` saying why."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise DataFileError(path, f"cannot read it ({exc.strerror or exc})") from None
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(path, f"not a complete JSON document (truncated or corrupt: {exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise DataFileError(path, f"not a specplug data file (expected format {FORMAT!r})")
    if document.get("kind") != kind:
        raise DataFileError(path, f"it holds {document.get('kind')!r}, not {kind!r}")
    supported = sorted(versions)
    version = document.get("version")
    if version not in supported:
        raise DataFileError(path, f"version {version!r} is not supported (this specplug reads {supported})")
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise DataFileError(path, "it has no payload object")
    if hashlib.sha256(_canonical(payload)).hexdigest() != document.get("sha256"):
        raise DataFileError(path, "checksum mismatch: the file was modified or damaged after it was written")
    return version, payload


def prompt_digest(token_ids: Sequence[int]) -> str:
    """Identity of one prompt as the engine saw it (its token ids): memories record the prompts they learned
    from, so a benchmark can refuse to measure on them."""
    return hashlib.sha256(json.dumps([int(t) for t in token_ids]).encode()).hexdigest()[:24]


def overlapping(prompts: Iterable[Sequence[int]], digests: set[str]) -> list[int]:
    """Indices of `prompts` whose digest is in `digests` (prompts a memory has learned from)."""
    return [i for i, p in enumerate(prompts) if prompt_digest(p) in digests]


log = logging.getLogger("specplug")


def check_interval(name: str, value: Any, *, method: str) -> None:
    """A save interval in seconds: a finite number ≥ 0 (0: save only at the orderly close)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ConfigError(name, value, "a number of seconds ≥ 0 (0: save only at shutdown)", method=method)


def check_save_path(path: str | None, *, method: str) -> None:
    """At startup: `save_path` must name a file that can be written (not a directory, in a writable folder)."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError("save_path", path, "a file path (this is a directory)", method=method)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError("save_path", path, f"a file in an existing, writable folder ({folder} is not)", method=method)
    if target.exists() and not (target.is_file() and os.access(target, os.W_OK)):
        raise ConfigError("save_path", path, "a regular file that can be written", method=method)


class PeriodicSaver:
    """Saves a memory to `path` every `interval_s` from a serving loop (in a background thread, so a step never
    waits on the disk) and once more at close. A failed save is logged as an error with the path, never raised:
    the bounded loss window is one interval, or nothing at an orderly shutdown."""

    def __init__(self, save: Any, path: str | None, interval_s: float, what: str) -> None:
        check_save_path(path, method=what.lower())
        self._save, self.path, self.interval_s, self.what = save, path, interval_s, what
        self.saved_at = time.monotonic()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def maybe_save(self) -> None:
        if not self.path or self.interval_s <= 0 or time.monotonic() - self.saved_at < self.interval_s:
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.saved_at = time.monotonic()
            self._thread = threading.Thread(target=self.save, name=f"specplug-save-{self.what}", daemon=True)
            self._thread.start()

    def save(self, path: str | None = None) -> bool:
        target = path or self.path
        if not target:
            return False
        try:
            self._save(target)
        except Exception:
            log.exception("specplug: could not save the %s memory to %s; serving continues", self.what, target)
            return False
        return True

    def summary(self) -> dict[str, Any]:
        return {"save_path": self.path, "save_interval_s": self.interval_s}

    def close(self) -> bool:
        """Wait for a running background save, then write the final one."""
        thread = self._thread
        if thread is not None:
            thread.join()
        return self.save()
