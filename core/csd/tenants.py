"""CSD's correction memory per tenant: what each request reads and what it learns into.

CSD is lossy, so what its memory learned from one request changes the *text* another request gets, not only its
speed. With `tenants: "separate"` (the default) the memory a deployment calibrated (`namespace`, from
`memory_path`) is read-only while serving, and every tenant learns on top of it in a namespace of its own
(`tenant:<name>`), which holds only that tenant's own counts: a pair's count for the tenant is the calibrated count
plus the tenant's. So one tenant's traffic never moves another's rescues.

Tenants come from the host (`core.host`: a name the deployment controls, such as a digest of vLLM's `cache_salt`).
Requests of the anonymous tenant, of a name a client only claims (unless `trust_claimed_tenant`) and of a new
tenant once `max_tenants` tenants learn already read the calibrated memory and learn nothing (counted in
`summary()["refused_tenants"]`; no tenant is ever evicted). Each tenant's own counts are bounded by
`max_pairs_per_tenant`, with the memory's eviction policy (least frequent, then least recently seen).

`tenants: "shared"` is the single-tenant mode: every request reads and learns `namespace` (what `specplug csd
calibrate` runs, and a deployment that serves one user).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from specplug.core.csd.memory import CorrectionMemory, pair_keys
from specplug.core.host import ANONYMOUS_TENANT, CLAIMED

if TYPE_CHECKING:
    from specplug.core.csd.bank import CorrectionMemoryBank
    from specplug.core.csd.config import CSDConfig

TENANT_PREFIX = "tenant:"


class TenantMemory(CorrectionMemory):
    """A tenant's own rejection counts on top of a read-only base memory (the calibrated one): a pair counts what
    the base holds plus what this tenant added. Only the tenant's own counts are stored, bounded and saved."""

    def __init__(self, base: CorrectionMemory, max_pairs: int) -> None:
        super().__init__(max_pairs)
        self.base = base

    def _base_count(self, key: int) -> int:
        return self.base._counts.get(key, 0)  # the base is read-only while tenants learn on top of it

    def _eligible_tensor(self, min_count: int) -> torch.Tensor:
        """The base's eligible keys (cached there, never rebuilt: the base is read-only) plus the pairs only this
        tenant's own counts take to `min_count`, sorted again as one tensor."""
        base = self.base._counts
        own = sorted(k for k, c in self._counts.items() if base.get(k, 0) < min_count <= c + base.get(k, 0))
        if not own:
            return self.base.keys_at_least(min_count)
        return torch.cat([self.base.keys_at_least(min_count), torch.tensor(own, dtype=torch.int64)]).sort().values

    def _evict(self, keep: int) -> None:
        super()._evict(keep)
        for m in self._eligible:  # an evicted own count may take a pair below m whatever the base holds
            self._eligible[m] = None

    def counts(self, draft: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().counts(draft, target) + self.base.counts(draft, target)

    @classmethod
    def adopt(cls, own: CorrectionMemory, base: CorrectionMemory, max_pairs: int) -> TenantMemory:
        """A tenant memory holding `own`'s counts (a tenant namespace read back from a file) over `base`."""
        memory = cls(base, max_pairs)
        data = own.to_data()
        keys = [(d << 32) | t for d, t in zip(data["draft"], data["target"], strict=True)]
        memory.add_counts(keys, data["count"])
        memory.observations, memory.evictions = own.observations, own.evictions
        return memory


class TenantMemories:
    """Routes requests to memories: `start`/`finish` follow the host's request announcements; `reading` gives the
    memory of each verified row, `learning` the one a request's mismatches go to (None: it learns nothing)."""

    def __init__(self, bank: CorrectionMemoryBank, config: CSDConfig) -> None:
        self.bank = bank
        self.config = config
        self.base = bank.memory(config.namespace)
        self._tenant_of: dict[str, str | None] = {}  # request id → tenant (None: shares nothing)
        self._learning: dict[str, TenantMemory] = {}
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    @property
    def separate(self) -> bool:
        return self.config.tenants == "separate"

    def start(self, request_id: str, tenant: str) -> None:
        self._tenant_of[str(request_id)] = self._sharing_name(tenant)

    def finish(self, request_id: str) -> None:
        self._tenant_of.pop(str(request_id), None)

    def _sharing_name(self, tenant: str) -> str | None:
        tenant = str(tenant)
        if tenant == ANONYMOUS_TENANT or (tenant.startswith(CLAIMED) and not self.config.trust_claimed_tenant):
            return None
        return tenant

    def reading(self, request_ids: Sequence[str]) -> list[CorrectionMemory]:
        """The memory each row reads: its tenant's, once that tenant learned something; else the calibrated one."""
        if not self.separate:
            return [self.base] * len(request_ids)
        learning = self._learning
        return [learning.get(self._tenant_of.get(str(rid)) or "", self.base) for rid in request_ids]

    def learning(self, request_id: str) -> CorrectionMemory | None:
        """Where `request_id`'s mismatches are counted: the shared memory, its tenant's, or nowhere."""
        if not self.separate:
            return self.base
        tenant = self._tenant_of.get(str(request_id))
        if tenant is None:
            return None
        found = self._learning.get(tenant)
        return found if found is not None else self._establish(tenant)

    def _establish(self, tenant: str) -> TenantMemory | None:
        with self._lock:
            found = self._learning.get(tenant)
            if found is not None:
                return found
            if tenant in self._refused:
                return None
            if len(self._learning) >= self.config.max_tenants:
                self._refused.add(tenant)
                return None
            name = TENANT_PREFIX + tenant
            memory = self.bank.tenant_memory(name, self.base, self.config.max_pairs_per_tenant)
            self._learning[tenant] = memory
            return memory

    def load_tenants(self) -> None:
        """Take up the tenant namespaces the bank read from its file (their counts learned in earlier runs)."""
        for name in self.bank.namespaces():
            if name.startswith(TENANT_PREFIX) and len(self._learning) < self.config.max_tenants:
                tenant = name[len(TENANT_PREFIX) :]
                self._learning[tenant] = self.bank.tenant_memory(name, self.base, self.config.max_pairs_per_tenant)

    def rebind(self, bank: CorrectionMemoryBank) -> TenantMemories:
        """Route the same requests over another bank (a memory file swapped in while serving): tenants learn on
        that file's calibrated memory and its tenant namespaces from now on."""
        with self._lock:
            self.bank, self.base = bank, bank.memory(self.config.namespace)
            self._learning, self._refused = {}, set()
        self.load_tenants()
        return self

    def observe(self, request_ids: Sequence[str], pairs: torch.Tensor, rows: torch.Tensor | None) -> None:
        """Count a step's mismatches `pairs` [M, 2] of rows `rows` [M] (indices into `request_ids`), each in the
        memory its request learns into. Without rows (a host that does not say) only the shared mode learns."""
        if not pairs.numel():
            return
        if not self.separate:
            self.base.observe(pairs[:, 0], pairs[:, 1])
            return
        if rows is None:
            return
        rows = rows.to(torch.int64).cpu()
        targets: dict[int, tuple[CorrectionMemory, list[int]]] = {}
        for row in torch.unique(rows).tolist():
            memory = self.learning(request_ids[row]) if 0 <= row < len(request_ids) else None
            if memory is not None:
                targets.setdefault(id(memory), (memory, []))[1].append(row)
        for memory, picked in targets.values():
            mask = torch.isin(rows, torch.tensor(picked))
            memory.observe(pairs[mask, 0], pairs[mask, 1])

    def summary(self) -> dict[str, int]:
        return {"tenants_learning": len(self._learning), "refused_tenants": len(self._refused)}


def frequent_pairs(
    tokens: torch.Tensor,
    best: torch.Tensor,
    memories: CorrectionMemory | Sequence[CorrectionMemory],
    min_count: int,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Whether each (tokens, best) pair was counted at least `min_count` times in the memory of its row.

    `memories` is one memory for the whole batch, or one per row with `rows` giving each element's row (same
    shape as `tokens`). One `torch.isin` per distinct memory in the batch (one, unless tenants differ)."""
    keys = pair_keys(tokens.clamp_min(0), best)
    if isinstance(memories, CorrectionMemory):
        return torch.isin(keys, memories.keys_at_least(min_count, tokens.device))
    distinct: dict[int, int] = {}
    slot = [distinct.setdefault(id(m), len(distinct)) for m in memories]
    unique = list({id(m): m for m in memories}.values())
    if len(unique) == 1:
        return torch.isin(keys, unique[0].keys_at_least(min_count, tokens.device))
    if rows is None:
        raise ValueError("per-row memories need each element's row")
    of_element = torch.tensor(slot, dtype=torch.int64, device=tokens.device)[rows]
    found = torch.zeros_like(keys, dtype=torch.bool)
    for index, memory in enumerate(unique):
        mask = of_element == index
        found[mask] = torch.isin(keys[mask], memory.keys_at_least(min_count, tokens.device))
    return found
