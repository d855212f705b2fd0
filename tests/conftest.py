"""Shared test policy.

Engine tests skip where the engine is not installed — except where the environment says the engine must be
there (CI sets SPECPLUG_REQUIRE_ENGINES=vllm), in which case a missing engine is a failure, not a skip, so a
broken install can never turn the real-engine tests into silent skips.
"""

from __future__ import annotations

import os

import pytest

from specplug.core.engines import engine_status


def require_engine(name: str) -> None:
    """Skip (or fail, when required by the environment) unless engine `name` is installed."""
    if engine_status(name).installed:
        return
    required = {e.strip() for e in os.environ.get("SPECPLUG_REQUIRE_ENGINES", "").split(",") if e.strip()}
    if name in required:
        pytest.fail(f"{name} is required by SPECPLUG_REQUIRE_ENGINES but is not installed")
    pytest.skip(f"{name} is not installed")


@pytest.fixture(autouse=True)
def _engine_marks(request: pytest.FixtureRequest) -> None:
    for engine in ("vllm", "sglang"):
        if request.node.get_closest_marker(engine):
            require_engine(engine)
