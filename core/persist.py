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
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from specplug.core.errors import ConfigError, SpecplugError
from specplug.core.files import remove_stale_temporaries, write_atomic

FORMAT = "specplug-data"


MIB = 1 << 20


class DataFileError(SpecplugError, ValueError):
    """A data file is missing, corrupt, tampered with, foreign, or of an unsupported version."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"refusing {path}: {reason}")


def _canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class _NonFiniteNumber(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    """`json.loads` accepts NaN and ±Infinity, which no specplug file writes (`allow_nan=False`)."""
    raise _NonFiniteNumber(name)


def read_regular_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of `path`, refusing (DataFileError) anything but a regular file *before* reading: a FIFO, a device
    or a socket would block the read forever (a hung engine start that SIGTERM cannot stop); and, given
    `max_bytes`, a file larger than that (an oversized file would be read whole into memory)."""
    try:
        info = os.stat(path)
        mode = info.st_mode
        if not stat.S_ISREG(mode):
            raise DataFileError(path, f"it is {_file_type(mode)}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise DataFileError(
                path, f"it is {info.st_size / MIB:.1f} MiB, more than the limit {max_bytes / MIB:.1f} MiB"
            )
        # Non-blocking, then checked again on the open file: a FIFO swapped in after the stat cannot block us.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DataFileError(path, f"cannot read it ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataFileError(path, f"it is {_file_type(mode)}, not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:  # it grew after the stat
            raise DataFileError(path, f"it is more than the limit {max_bytes / MIB:.1f} MiB")
        return data
    except OSError as exc:
        raise DataFileError(path, f"cannot read it ({exc.strerror or exc})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"


def check_token_ids(path: str | os.PathLike[str], ids: Any, vocab_size: int | None) -> None:
    """Refuse (DataFileError) a memory whose token ids do not all lie in the target's vocabulary [0, vocab_size):
    a checksum proves a file is whole, not that it was written for this tokenizer. `ids`: ints, or lists / dicts
    of them at any depth (every int leaf is a token id). vocab_size None: nothing to check against."""
    if vocab_size is None:
        return
    stack = [ids]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and not 0 <= item < vocab_size:
            raise DataFileError(
                path, f"token id {item} is outside the target's vocabulary [0, {vocab_size}) (another tokenizer?)"
            )


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


def read_data_file(
    path: str | os.PathLike[str], kind: str, versions: Iterable[int], max_bytes: int | None = None
) -> tuple[int, dict[str, Any]]:
    """Return (version, payload) of a file written by `write_data_file`, or raise `DataFileError` saying why."""
    raw = read_regular_file(path, max_bytes)
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except _NonFiniteNumber as exc:
        raise DataFileError(path, f"it holds {exc.args[0]}, which is not a number JSON allows") from None
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


def check_output_file(setting: str, path: Any, *, method: str | None) -> None:
    """At startup: `path` must name a file specplug can (re)write: not a directory or other non-regular file, in
    an existing folder where a file can really be created (tried: permission bits do not stop root, a read-only or
    virtual filesystem does)."""
    if path is None:
        return
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(setting, path, "a file path, or null", method=method)
    target = Path(path)
    if target.is_dir():
        raise ConfigError(setting, str(path), "a file path (this is a directory)", method=method)
    if target.exists() and not target.is_file():
        raise ConfigError(setting, str(path), "a regular file (this exists and is not one)", method=method)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(setting, str(path), f"a file in an existing folder ({folder} is not one)", method=method)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        allowed = f"a file in a writable folder (cannot create a file in {folder}: {reason})"
        raise ConfigError(setting, str(path), allowed, method=method) from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(setting, str(path), "a regular file that can be written", method=method)


def check_save_path(path: str | None, *, method: str) -> None:
    """At startup: `save_path` must name a file that can be written (not a directory, in a writable folder)."""
    if not path:
        return
    check_output_file("save_path", path, method=method)


class PeriodicSaver:
    """Saves a memory to `path` every `interval_s` from a serving loop (in a background thread, so a step never
    waits on the disk) and once more at close. A failed save is logged as an error with the path, never raised:
    the bounded loss window is one interval, or nothing at an orderly shutdown."""

    def __init__(self, save: Any, path: str | None, interval_s: float, what: str) -> None:
        check_save_path(path, method=what.lower())
        if path:
            for leftover in remove_stale_temporaries(path):
                log.warning("specplug: removed %s, left by a %s save that was killed mid-write", leftover, what)
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
