"""vLLM's `vllm.general_plugins` entry point. vLLM calls `register()` in every process it starts.

In the front-end process (the user's `LLM(...)` script, the OpenAI server) vLLM runs it before it builds its
configuration, so the bootstrap also wraps `EngineArgs.create_engine_config`: specplug's settings are checked
there (`settings.check_engine_args`, `settings.check_vllm_config`) before any engine process starts, and a bad
value ends the start in seconds with one `ConfigError` line. `EngineArgs.from_cli_args` (the OpenAI server's parsed
command line) is wrapped to warn when ToolSpec is served without tool-call parsing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from specplug.core.bootstrap import EngineBootstrap
from specplug.core.errors import ConfigError
from specplug.core.plugin_manager import get_plugin_manager

log = logging.getLogger("specplug")


def _install() -> None:
    # Building the manager loads every specplug plugin in this engine process; the runner patches (through
    # specplug.core.patching) attach a method only to runners whose --additional-config selects one.
    from specplug.core.heap import start_trace_from_env
    from specplug.plugins.vllm_smc.runner_hooks import install

    get_plugin_manager()
    install()
    install_front_end()
    start_trace_from_env()


def install_front_end() -> None:
    """Wrap `EngineArgs.create_engine_config` and `EngineArgs.from_cli_args` once per process."""
    from vllm.engine.arg_utils import EngineArgs

    from specplug.plugins.vllm_smc import settings
    from specplug.plugins.vllm_smc.runner_hooks import PATCHER

    if any(status.key.endswith("EngineArgs.create_engine_config") for status in PATCHER.report()):
        return
    original_create = EngineArgs.create_engine_config
    original_cli = EngineArgs.__dict__["from_cli_args"].__func__

    @functools.wraps(original_create)
    def create_engine_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            settings.check_engine_args(self)
        except ConfigError as exc:  # the user's mistake: the error's own line, not specplug's call stack
            raise exc.with_traceback(None) from None
        config = original_create(self, *args, **kwargs)
        try:
            settings.check_vllm_config(config)
        except ConfigError as exc:
            raise exc.with_traceback(None) from None
        return config

    @functools.wraps(original_cli)
    def from_cli_args(cls: Any, args: Any) -> Any:
        engine_args = original_cli(cls, args)
        warning = settings.tool_flags_warning(args, engine_args)
        if warning:
            log.warning(warning)
        return engine_args

    PATCHER.patch(
        EngineArgs,
        "create_engine_config",
        create_engine_config,
        reason="check specplug's settings in the front end, before any engine process starts",
    )
    PATCHER.patch(
        EngineArgs,
        "from_cli_args",
        classmethod(from_cli_args),
        reason="warn when ToolSpec is served without --enable-auto-tool-choice --tool-call-parser",
    )
    PATCHER.verify()


BOOTSTRAP = EngineBootstrap("vllm", _install)


def register() -> None:
    """Idempotent, version-gated; never raises into vLLM."""
    BOOTSTRAP()
