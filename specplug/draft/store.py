"""Where distilled drafts live: `<cache>/drafts/<name>`, a verified cache entry found by name.

A draft is written like every cache entry (built in a temporary directory beside it, a manifest with the SHA-256
of every file, one rename into place), so an interrupted or failed run never leaves a half-written checkpoint
under the final name, and a damaged one is refused on load instead of served.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from specplug.assets.cache import ChecksumError, cache_dir, ensure_entry, verify_entry

PROVENANCE = "specplug-draft.json"


def drafts_dir() -> Path:
    return cache_dir() / "drafts"


def draft_path(name: str) -> Path:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise ValueError(f"a draft name is one plain path component (letters, digits, -, _), got {name!r}")
    return drafts_dir() / name


def find_draft(name: str) -> Path | None:
    """The checkpoint of a distilled draft called `name`, None if there is none; a damaged one is an error."""
    try:
        path = draft_path(name)
    except ValueError:
        return None
    if not path.exists():
        return None
    status = verify_entry(path)
    if not status.ok:
        raise ChecksumError(f"the distilled draft {name!r} at {path} is damaged ({status.problem}); distill it again")
    return path


def list_drafts() -> list[tuple[str, dict[str, Any]]]:
    """Every verified draft with its provenance (name order)."""
    root = drafts_dir()
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or not path.is_dir() or not verify_entry(path).ok:
            continue
        found.append((path.name, json.loads((path / PROVENANCE).read_text())))
    return found


def install_draft(
    name: str, build: Callable[[Path], Mapping[str, Any] | None], *, replace: bool, progress: Callable[[str], None]
) -> Path:
    """Build a draft into place atomically; with `replace`, an existing draft is swapped out only once the new one
    is complete and verified."""
    final = draft_path(name)
    if not final.exists():
        return ensure_entry(final, build, name=name, progress=progress)
    if not replace:
        raise FileExistsError(f"a draft called {name!r} exists at {final}")
    staged = ensure_entry(final.with_name(f".{name}.new-{uuid.uuid4().hex[:8]}"), build, name=name, progress=progress)
    trash = final.with_name(f".{name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(final, trash)
    os.replace(staged, final)
    shutil.rmtree(trash, ignore_errors=True)
    return final
