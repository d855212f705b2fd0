"""SMC-SD (sequential Monte Carlo speculative decoding) in engine-neutral tensor code.

Engines move tokens, logits and KV blocks; this package decides what the particles' weights are, when a group
resamples, which lineage each particle slot continues (the fork plan) and which particle a request returns.
Its hook implementations (`plugin`) load without torch, so discovering plugins stays cheap: the tensor code is
imported on first use of the names below.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SMCConfig": "specplug.core.smc.config",
    "ForkPlan": "specplug.core.smc.resample",
    "CycleResult": "specplug.core.smc.sampler",
    "FinalResult": "specplug.core.smc.sampler",
    "SMCSampler": "specplug.core.smc.sampler",
    "ParticleState": "specplug.core.smc.state",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
