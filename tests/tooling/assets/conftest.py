"""Fixtures for the assets tests: an isolated cache, tiny fake wheels and a fetcher that counts its calls."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from specplug.assets.cache import ENV_CACHE_DIR, WheelPin


@pytest.fixture(autouse=True)
def _isolated_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Fast tests never touch the user's cache; slow tests (marked) may use the real one."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path_factory.mktemp("specplug-cache")))


def make_wheel(directory: Path, files: Mapping[str, bytes | str], name: str = "fakepkg-1.0-py3-none-any.whl") -> Path:
    """A minimal wheel (a zip) holding `files`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data.encode() if isinstance(data, str) else data)
    return path


def pin_for(wheel: Path, package: str = "fakepkg", version: str = "1.0") -> WheelPin:
    return WheelPin(package, version, hashlib.sha256(wheel.read_bytes()).hexdigest())


class FakeFetcher:
    """Stands in for `pip download`: copies a prepared wheel, or raises what it is told to."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.calls = 0
        self.fail: BaseException | None = None

    def __call__(self, pin: WheelPin, dest: Path) -> Path:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.wheel, dest / self.wheel.name))


@pytest.fixture
def fake_wheel_factory(tmp_path: Path) -> Callable[..., tuple[Path, WheelPin, FakeFetcher]]:
    def factory(files: Mapping[str, bytes | str]) -> tuple[Path, WheelPin, FakeFetcher]:
        wheel = make_wheel(tmp_path / "wheels", files)
        return wheel, pin_for(wheel), FakeFetcher(wheel)

    return factory
