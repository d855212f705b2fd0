"""The one utility through which specplug changes engine internals that have no official hook.

Every patch is recorded (what was replaced, by what, why), refused if the same attribute is already patched
(by us or by another package using the same marker), gated on a tested engine version, verifiable after the
fact (an engine that re-binds the attribute, or an upgrade that moved it, shows up as "not in effect"), and
undoable so tests leave the engine as they found it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from specplug.core.engines import engine_status, untested_allowed
from specplug.core.errors import PatchError, UntestedEngineError

log = logging.getLogger("specplug")

_MARK = "__specplug_patch__"
_MISSING = object()


@dataclass
class Patch:
    """One replaced (or added) attribute."""

    key: str
    owner: Any
    attribute: str
    original: Any
    replacement: Any
    reason: str

    @property
    def added(self) -> bool:
        """True when the owner had no attribute of its own (new, or inherited): undo deletes it."""
        return self.original is _MISSING

    @property
    def in_effect(self) -> bool:
        return self.owner.__dict__.get(self.attribute, _MISSING) is self.replacement


@dataclass(frozen=True)
class PatchStatus:
    key: str
    reason: str
    in_effect: bool


def _qualname(owner: Any) -> str:
    module = getattr(owner, "__module__", None) or getattr(owner, "__name__", "?")
    name = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
    return name if module == name else f"{module}.{name}"


class Patcher:
    """Applies and tracks the patches of one engine.

    `engine` names an entry of `specplug.core.engines.ENGINES`; `patch()` refuses to touch an engine version
    outside the tested set (unless SPECPLUG_ALLOW_UNTESTED=1) or one that is not installed. Pass
    `engine=None` for objects that belong to no engine (tests).
    """

    def __init__(self, engine: str | None) -> None:
        self.engine = engine
        self._patches: dict[str, Patch] = {}

    def check_version(self) -> None:
        if self.engine is None:
            return
        status = engine_status(self.engine)
        if not status.installed:
            raise UntestedEngineError(f"cannot patch {self.engine}: it is not installed")
        if not status.tested and not untested_allowed():
            raise UntestedEngineError(
                f"{status.distribution}=={status.version} is not a tested version of {self.engine} "
                f"(tested: {status.tested_versions}); set SPECPLUG_ALLOW_UNTESTED=1 to try anyway"
            )

    def patch(self, owner: Any, attribute: str, replacement: Any, *, reason: str, allow_add: bool = False) -> Patch:
        """Replace `owner.attribute` with `replacement` (a class or module attribute)."""
        self.check_version()
        key = f"{_qualname(owner)}.{attribute}"
        if key in self._patches:
            raise PatchError(f"{key} is already patched by specplug ({self._patches[key].reason})")
        visible = getattr(owner, attribute, _MISSING)  # may be inherited
        if visible is _MISSING and not allow_add:
            raise PatchError(
                f"{key} does not exist in this engine version; the patch target moved — refusing to add it"
            )
        if getattr(visible, _MARK, None):
            raise PatchError(f"{key} is already patched ({getattr(visible, _MARK)}); refusing a double patch")
        current = owner.__dict__.get(attribute, _MISSING)  # what undo restores; missing -> delete
        # Builtins and slotted objects cannot carry the marker; the registry still guards our own patches.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(replacement, _MARK, key)
        setattr(owner, attribute, replacement)
        patch = Patch(key, owner, attribute, current, replacement, reason)
        self._patches[key] = patch
        log.info("specplug: %s %s (%s)", "added" if patch.added else "replaced", key, reason)
        return patch

    def original(self, key: str) -> Any:
        """The attribute as it was before patching (for wrappers that call through)."""
        return self._patches[key].original

    def undo(self, key: str) -> None:
        patch = self._patches.pop(key)
        if patch.added:
            delattr(patch.owner, patch.attribute)
        else:
            setattr(patch.owner, patch.attribute, patch.original)

    def undo_all(self) -> None:
        for key in reversed(list(self._patches)):
            self.undo(key)

    def report(self) -> list[PatchStatus]:
        return [PatchStatus(p.key, p.reason, p.in_effect) for p in self._patches.values()]

    def verify(self) -> None:
        """Raise if any recorded patch is no longer in effect (an engine re-bound or moved the attribute)."""
        lost = [p.key for p in self._patches.values() if not p.in_effect]
        if lost:
            raise PatchError(f"specplug patches not in effect: {', '.join(lost)}")
