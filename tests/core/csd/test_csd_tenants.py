"""CSD's correction memory per tenant (`core.csd.tenants`), through a host's session as every engine drives it:
requests announced with their tenant, verify steps with the rows' request ids, step announcements with the
mismatches' rows. What one tenant's traffic teaches never changes another tenant's rescues (CSD is lossy: a rescue
changes the text), anonymous and client-claimed names learn nothing, and every bound holds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.csd.memory import CorrectionMemory, pair_keys
from specplug.core.csd.tenants import TenantMemory
from specplug.core.host import CLAIMED, MethodSession
from specplug.core.types import DraftBatch, RequestContext, StepOutcome

VOCAB = 16
DRAFT, TARGET = 3, 5  # the pair a tenant teaches: draft 3 where the target's arg-max is 5


def _logits(rows: int) -> torch.Tensor:
    """[rows, 2, V]: the target prefers 5 but 3 is close (ratio 0.5 ≥ τ), then 7."""
    logits = torch.full((rows, 2, VOCAB), -10.0)
    logits[:, 0, TARGET], logits[:, 0, DRAFT], logits[:, 1, 7] = 0.0, math.log(0.5), 0.0
    return logits


def _step(session: MethodSession, ids: list[str]) -> torch.Tensor:
    """One verify step of draft [3] for each request in `ids`, announced as a host does; the accepted counts."""
    draft = DraftBatch(torch.full((len(ids), 1), DRAFT), torch.ones(len(ids), dtype=torch.int64))
    result = session.verify(draft, _logits(len(ids)), request_ids=ids)
    extra = {"mismatches": result.mismatches, "mismatch_rows": result.mismatch_rows}
    session.step(StepOutcome(ids, draft.num_tokens, result.num_accepted, result.num_rescued, extra=extra))
    return result.num_accepted


def _session(**config: object) -> MethodSession:
    return MethodSession("csd", {"lam": 2, "tau": 0.1, "gamma": 1, **config}, engine="test")


def _start(session: MethodSession, rid: str, tenant: str) -> None:
    session.request_started(RequestContext(rid, [1, 2], tenant=tenant))


def test_one_tenants_lesson_never_rescues_for_another() -> None:
    session = _session()
    _start(session, "alice-1", "salt:alice")
    _start(session, "bob-1", "salt:bob")
    assert _step(session, ["alice-1", "bob-1"]).tolist() == [0, 0]  # both see (3, 5) once: not yet λ = 2
    for _ in range(3):
        assert _step(session, ["alice-1"]).tolist() == [1]  # alice's second sighting makes λ: rescued
    # bob saw the pair once himself: his second sighting makes his own λ, and it is his alone
    _start(session, "carol-1", "salt:carol")
    assert _step(session, ["carol-1", "bob-1"]).tolist() == [0, 1]
    bank = session.memory  # every sighting counts, rescued or not: alice 1 + 3
    assert bank.memory("tenant:salt:alice").counts(torch.tensor([DRAFT]), torch.tensor([TARGET])).item() == 4
    assert bank.memory("default").observations == 0  # the calibrated memory is read-only while serving
    assert session.report()["csd_tenants"] == {"tenants_learning": 3, "refused_tenants": 0}


def test_anonymous_and_claimed_requests_learn_nothing_unless_the_operator_trusts_claims() -> None:
    session = _session()
    _start(session, "anon", "")
    _start(session, "claim", CLAIMED + "alice")
    for _ in range(3):
        assert _step(session, ["anon", "claim"]).tolist() == [0, 0]
    assert session.memory.namespaces() == ["default"]

    trusting = _session(trust_claimed_tenant=True)
    _start(trusting, "claim", CLAIMED + "alice")
    assert [_step(trusting, ["claim"]).item() for _ in range(2)] == [0, 1]


def test_calibrated_counts_are_every_tenants_start() -> None:
    session = _session(lam=3)
    session.memory.memory("default").add_counts([int(pair_keys(torch.tensor(DRAFT), torch.tensor(TARGET)))], [1])
    _start(session, "a", "salt:a")
    _start(session, "b", "salt:b")
    assert _step(session, ["a", "b"]).tolist() == [0, 0]  # 1 calibrated + 1 own = 2 < 3
    assert _step(session, ["a"]).tolist() == [1]  # 1 + 2 = λ for a; b has seen it once
    assert _step(session, ["b"]).tolist() == [1]  # and now b too, by its own count


def test_tenants_past_the_bound_read_the_calibrated_memory_and_nobody_is_evicted() -> None:
    session = _session(max_tenants=2)
    for name in ("a", "b", "c"):
        _start(session, name, f"salt:{name}")
    for _ in range(2):
        accepted = _step(session, ["a", "b", "c"])
    assert accepted.tolist() == [1, 1, 0]  # c was refused a memory: it reads the calibrated one, learns nothing
    assert session.report()["csd_tenants"] == {"tenants_learning": 2, "refused_tenants": 1}
    assert "tenant:salt:c" not in session.memory.namespaces()


def test_a_tenants_own_counts_are_bounded() -> None:
    base = CorrectionMemory()
    tenant = TenantMemory(base, max_pairs=8)
    tenant.observe(torch.arange(20), torch.arange(20) + 100)
    assert len(tenant) <= 8 and len(base) == 0


def test_tenant_keys_are_calibrated_plus_own_counts_exactly() -> None:
    """Against a brute-force count on random pairs: a key is eligible iff calibrated + own count ≥ m, also after
    the caches were built and more was learned."""
    gen = torch.Generator().manual_seed(7)
    base = CorrectionMemory()
    base.observe(torch.randint(0, 6, (200,), generator=gen), torch.randint(0, 6, (200,), generator=gen))
    tenant = TenantMemory(base, max_pairs=1000)
    for _ in range(4):
        tenant.observe(torch.randint(0, 6, (30,), generator=gen), torch.randint(0, 6, (30,), generator=gen))
        for m in (1, 5, 8, 12):
            d, t = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
            total = base.counts(d.flatten(), t.flatten()) + CorrectionMemory.counts(tenant, d.flatten(), t.flatten())
            want = sorted(pair_keys(d.flatten(), t.flatten())[total >= m].tolist())
            assert tenant.keys_at_least(m).tolist() == want


def test_tenant_memories_persist_and_are_taken_up_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "ocm.json"
    first = _session(save_path=str(path), save_interval_s=0)
    _start(first, "a", "salt:a")
    _step(first, ["a"])
    first.close()
    saved = CorrectionMemoryBank.load(path)
    assert saved.namespaces() == ["default", "tenant:salt:a"] and saved.memory("default").observations == 0

    second = _session(memory_path=str(path))
    _start(second, "a2", "salt:a")
    _start(second, "b", "salt:b")
    assert _step(second, ["a2", "b"]).tolist() == [1, 0]  # a's one earlier sighting survived the restart


def test_shared_mode_learns_one_memory_for_every_request() -> None:
    """`tenants: shared` (single-tenant deployments, `specplug csd calibrate`): the configured namespace learns."""
    session = _session(tenants="shared")
    _start(session, "anon", "")
    _start(session, "b", "salt:b")
    assert _step(session, ["anon"]).tolist() == [0]
    assert _step(session, ["b"]).tolist() == [1]  # learned from the anonymous request
    assert session.memory.namespaces() == ["default"] and session.memory.memory().observations == 2


@pytest.mark.parametrize(("key", "value"), [("tenants", "per-user"), ("max_tenants", 0), ("max_pairs_per_tenant", 0)])
def test_bad_tenant_settings_are_refused_at_startup(key: str, value: object) -> None:
    from specplug.core.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        _session(**{key: value})
