"""Fixtures every engine adapter's tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def register_plugin() -> Iterator[Callable[[Any, str], Any]]:
    """Register test plugins (recorders, wrappers) on the process-wide plugin manager for one test."""
    from specplug.core.plugin_manager import get_plugin_manager

    pm, names = get_plugin_manager(), []

    def register(plugin: Any, name: str) -> Any:
        pm.register(plugin, name=name)
        names.append(name)
        return plugin

    yield register
    for name in names:
        pm.unregister(name=name)
