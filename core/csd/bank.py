"""Correction memories by namespace, and their file.

One deployment may keep separate memories per (target, draft) pair or per tenant: a namespace is just a name, and
pairs counted in one never reach another. The file also records which prompts calibrated it (digests of their
token ids), so a benchmark can refuse to measure on prompts the memory has already seen.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from specplug.core.csd.memory import CorrectionMemory
from specplug.core.persist import (
    DataFileError,
    check_token_ids,
    overlapping,
    prompt_digest,
    read_data_file,
    write_data_file,
)

if TYPE_CHECKING:
    from specplug.core.csd.tenants import TenantMemory

log = logging.getLogger("specplug")

KIND = "csd-correction-memory"
VERSION = 1
MAX_NAMESPACES = 4096


class CorrectionMemoryBank:
    """Namespaced correction memories plus calibration provenance; `save`/`load` give the checksummed file."""

    def __init__(self, max_pairs: int = 1_000_000, metadata: Mapping[str, Any] | None = None) -> None:
        self.max_pairs = max_pairs
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.calibration_prompts: set[str] = set()
        self._memories: dict[str, CorrectionMemory] = {}
        self._lock = threading.Lock()

    def memory(self, namespace: str = "default") -> CorrectionMemory:
        """The memory of `namespace`, created empty on first use."""
        with self._lock:
            found = self._memories.get(namespace)
            if found is None:
                if len(self._memories) >= MAX_NAMESPACES:
                    raise ValueError(f"more than {MAX_NAMESPACES} correction-memory namespaces; refusing {namespace!r}")
                found = self._memories[namespace] = CorrectionMemory(self.max_pairs)
            return found

    def tenant_memory(self, name: str, base: CorrectionMemory, max_pairs: int) -> TenantMemory:
        """The memory of tenant namespace `name`, learning on top of `base` (`core.csd.tenants`): the one read from
        the file under that name, or a new empty one."""
        from specplug.core.csd.tenants import TenantMemory

        with self._lock:
            found = self._memories.get(name)
            if isinstance(found, TenantMemory) and found.base is base:
                return found
            if found is None and len(self._memories) >= MAX_NAMESPACES:
                raise ValueError(f"more than {MAX_NAMESPACES} correction-memory namespaces; refusing {name!r}")
            memory = TenantMemory.adopt(found, base, max_pairs) if found is not None else TenantMemory(base, max_pairs)
            self._memories[name] = memory
            return memory

    def namespaces(self) -> list[str]:
        with self._lock:
            return sorted(self._memories)

    def record_calibration(self, prompts: Iterable[Sequence[int]]) -> None:
        self.calibration_prompts.update(prompt_digest(p) for p in prompts)

    def overlap(self, prompts: Iterable[Sequence[int]]) -> list[int]:
        """Indices of `prompts` that calibrated this memory (a benchmark must not measure on them)."""
        return overlapping(prompts, self.calibration_prompts)

    # --- file --------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        with self._lock:
            memories = dict(self._memories)
        payload = {
            "metadata": self.metadata,
            "calibration_prompts": sorted(self.calibration_prompts),
            "namespaces": {name: memories[name].to_data() for name in sorted(memories)},
        }
        write_data_file(path, KIND, VERSION, payload)

    def save_quietly(self, path: str | os.PathLike[str]) -> bool:
        """Save from a serving loop: a failure (disk full, permissions) is logged, never raised into the engine."""
        try:
            self.save(path)
        except Exception:
            log.exception("specplug: could not save the correction memory to %s; serving continues", path)
            return False
        return True

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        max_pairs: int | None = None,
        vocab_size: int | None = None,
        max_bytes: int | None = None,
    ) -> CorrectionMemoryBank:
        """Read a memory file; a corrupt, tampered, truncated or foreign file raises `DataFileError` saying why, and
        so does one whose token ids lie outside the target's vocabulary (`vocab_size`, when the caller knows it), one
        larger than `max_bytes` (refused before it is read) and one with a namespace of more than `max_pairs` pairs
        (evicting them silently would serve another memory than the one calibrated)."""
        _, payload = read_data_file(path, KIND, [VERSION], max_bytes=max_bytes)
        namespaces = payload.get("namespaces")
        prompts = payload.get("calibration_prompts", [])
        if not isinstance(namespaces, dict) or not isinstance(prompts, list):
            raise DataFileError(path, "payload lacks 'namespaces' (object) or 'calibration_prompts' (list)")
        first = next(iter(namespaces.values()), {})
        bound = max_pairs if max_pairs is not None else int(first.get("max_pairs", 1_000_000))
        bank = cls(bound, payload.get("metadata") or {})
        bank.calibration_prompts = {str(p) for p in prompts}
        for name, data in namespaces.items():
            if not isinstance(data, dict):
                raise DataFileError(path, f"namespace {name!r} is not an object")
            check_token_ids(path, [data.get("draft"), data.get("target")], vocab_size)
            held = len(data.get("draft") or [])
            if max_pairs is not None and held > max_pairs:
                raise DataFileError(path, f"namespace {name!r} holds {held} pairs, more than max_pairs {max_pairs}")
            try:
                bank._memories[name] = CorrectionMemory.from_data(data, bound)
            except ValueError as exc:
                raise DataFileError(path, f"namespace {name!r}: {exc}") from None
        return bank

    def summary(self) -> dict[str, Any]:
        with self._lock:
            memories = dict(self._memories)
        return {
            name: {"pairs": len(m), "observations": m.observations, "evictions": m.evictions}
            for name, m in sorted(memories.items())
        }
