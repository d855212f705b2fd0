"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Written to a temporary file in the same folder, fsynced, given the permissions a normal write would get (mkstemp
makes 0600), then renamed over the target; a failure removes the temporary file and leaves the target intact.
A process killed mid-write (SIGKILL) leaves its temporary file behind: `remove_stale_temporaries` clears those
at the next start.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

STALE_AFTER_S = 300.0  # a write takes milliseconds: an older temporary file belongs to a killed writer


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    blob = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every filesystem allows fsync on a directory
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}."


def remove_stale_temporaries(path: str | os.PathLike[str], older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporary files that killed writers of `path` left behind (only those older than `older_than_s`,
    so a write in progress in another process keeps its file); returns what was removed."""
    target = Path(path)
    if not target.parent.is_dir():
        return []
    now, removed = time.time(), []
    for leftover in target.parent.glob(f"{_temporary_prefix(target)}*.tmp"):
        try:
            if leftover.is_file() and now - leftover.stat().st_mtime > older_than_s:
                leftover.unlink()
                removed.append(leftover)
        except OSError:  # another process removed it first, or it is not ours to remove
            continue
    return removed
