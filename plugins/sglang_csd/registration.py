"""Registers `--speculative-algorithm CSD` with SGLang's official registry (`SpeculativeAlgorithm.register`,
`sglang/srt/speculative/spec_info.py:67-91`).

Idempotent: SGLang refuses a second registration of a name (`spec_registry.py:251-252`) and runs plugins in
several processes and possibly more than once, so an existing CSD registration of ours is kept. The worker class
is imported inside the factory: the factory runs only in the scheduler process that builds the worker
(`managers/scheduler.py:1063`), so registering needs neither `sgl_kernel` nor a GPU.
"""

from __future__ import annotations

from typing import Any

from specplug.core.errors import PatchError
from specplug.plugins.sglang_csd.settings import ALGORITHM


def csd_worker_factory(server_args: Any) -> type:
    """SGLang's worker factory for CSD: returns the worker class (imported here, lazily)."""
    from specplug.plugins.sglang_csd.worker import CSDWorker

    return CSDWorker


def register_csd() -> Any:
    """Make `--speculative-algorithm CSD` resolve to `CSDAlgo`; returns the registered algorithm object."""
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    from specplug.plugins.sglang_csd.algo import CSDAlgo, validate_server_args

    try:
        existing = SpeculativeAlgorithm.from_string(ALGORITHM)
    except ValueError:
        existing = None
    if existing is not None:
        if type(existing).__name__ == CSDAlgo.__name__ and type(existing).__module__ == CSDAlgo.__module__:
            return existing
        raise PatchError(f"--speculative-algorithm {ALGORITHM} is already registered by someone else: {existing!r}")
    SpeculativeAlgorithm.register(
        ALGORITHM,
        supports_overlap=True,  # the NGRAM worker runs under overlap scheduling (ngram_worker.py:95)
        validate_server_args=validate_server_args,
        spec_class=CSDAlgo,
    )(csd_worker_factory)
    registered = SpeculativeAlgorithm.from_string(ALGORITHM)
    if not isinstance(registered, CSDAlgo):
        raise PatchError(f"--speculative-algorithm {ALGORITHM} resolves to {registered!r}, not specplug's CSDAlgo")
    return registered
