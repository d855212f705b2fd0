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
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from specplug.core.errors import SpecplugError
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
