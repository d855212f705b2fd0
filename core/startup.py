"""Startup checks of a method's settings that need no engine.

A host runs them in its front-end process before the engine starts (vLLM: `plugins/vllm_smc/settings.py`, from the
bootstrap's `EngineArgs.create_engine_config` wrapper), and `specplug doctor --config` runs the same ones, so a
bad value ends the start in seconds with one `ConfigError` line naming the setting, the value and what is allowed
(memory files: the setting, the file and the reason), instead of failing inside an engine worker.

Each method's own config module holds its check (`check_startup(given, *, num_speculative_tokens, vocab_size)`);
this table points at them. A method without an entry (a third-party one) is checked when the engine builds it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

STARTUP_CHECKS = {
    "csd": "specplug.core.csd.config:check_startup",
    "csd_tree": "specplug.core.csd.config:check_startup",
    "toolspec": "specplug.core.toolspec.config:check_startup",
    "smc": "specplug.core.smc.config:check_startup",
}


def has_startup_check(method: str) -> bool:
    return method in STARTUP_CHECKS


def check_method_known(method: str) -> None:
    """Refuse a method no installed plugin provides (what `MethodSession` refuses inside the engine)."""
    from specplug.core.errors import ConfigError
    from specplug.core.plugin_manager import get_plugin_manager

    methods = get_plugin_manager().methods()
    if any(m.name == method for m in methods):
        return
    known = ", ".join(sorted({m.name for m in methods if m.role in ("method", "proposer", "verifier")}))
    raise ConfigError("method", method, f"a method an installed plugin provides: {known}")


def check_settings(
    method: str,
    given: Mapping[str, Any],
    *,
    num_speculative_tokens: int | None = None,
    vocab_size: int | None = None,
    pair: Mapping[str, str] | None = None,
) -> Any:
    """Check `method`'s settings `given` (without the "method" key); return its validated config object, or None
    for a method with no startup check. `pair`: the engine's (target, draft, tokenizer) identity
    (`core.model_identity.pair_identity`), for checks that refuse a memory recorded for another pair.
    Raises `ConfigError` (the setting, the value, what is allowed)."""
    check_method_known(method)
    target = STARTUP_CHECKS.get(method)
    if target is None:
        return None
    module, function = target.split(":")
    check = getattr(importlib.import_module(module), function)
    facts: dict[str, Any] = {"num_speculative_tokens": num_speculative_tokens, "vocab_size": vocab_size}
    if pair is not None and "pair" in inspect.signature(check).parameters:  # checks of memories tied to a pair
        facts["pair"] = pair
    return check(given, **facts)
