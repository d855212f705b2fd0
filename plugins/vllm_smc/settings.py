"""Which specplug method a vLLM engine runs, and its settings, from vLLM's own configuration.

Users select a method with vLLM's flags: `--additional-config '{"specplug": {"method": "csd", ...}}'` (the other
keys are the method's settings, validated by the plugin that builds it) beside `--speculative-config` for the
drafter. Reads attributes only (no vLLM import), so it can be checked without starting an engine.
"""

from __future__ import annotations

import logging
from typing import Any

from specplug.core.errors import ConfigError

log = logging.getLogger("specplug")

ADDITIONAL_CONFIG_KEY = "specplug"
EXAMPLE = '--additional-config \'{"specplug": {"method": "csd", "lam": 6}}\''


def selected_method(vllm_config: Any) -> str | None:
    """The specplug method named in `--additional-config '{"specplug": {"method": ...}}'`, or None."""
    extra = (getattr(vllm_config, "additional_config", None) or {}).get(ADDITIONAL_CONFIG_KEY)
    if extra is None:
        return None
    if not isinstance(extra, dict) or not isinstance(extra.get("method"), str):
        raise ConfigError(
            f"additional_config.{ADDITIONAL_CONFIG_KEY}", extra, f"a JSON object with a method, e.g. {EXAMPLE}"
        )
    return extra["method"]


def runs_specplug(vllm_config: Any) -> bool:
    """Whether this engine serves a specplug method (its `--additional-config` block, or a `specplug.X` proposer)."""
    spec = getattr(vllm_config, "speculative_config", None)
    return selected_method(vllm_config) is not None or _alias_method(getattr(spec, "model", None)) is not None


def method_settings(vllm_config: Any, method: str) -> dict[str, Any]:
    """The `additional_config.specplug` settings of `method`, without the "method" key."""
    extra = (getattr(vllm_config, "additional_config", None) or {}).get(ADDITIONAL_CONFIG_KEY)
    if not isinstance(extra, dict):
        raise ConfigError(f"additional_config.{ADDITIONAL_CONFIG_KEY}", extra, f"a JSON object, e.g. {EXAMPLE}")
    given = dict(extra)
    named = given.pop("method", method)
    if named != method:
        raise ConfigError(f"additional_config.{ADDITIONAL_CONFIG_KEY}.method", named, f'"{method}"')
    if getattr(vllm_config, "use_v2_model_runner", False):
        raise ConfigError(
            "VLLM_USE_V2_MODEL_RUNNER", 1, "0: specplug's vLLM methods extend the V1 model runner", method=method
        )
    return given


# --- front-end checks: run in vLLM's front-end process before the engine starts -----------------------------------
# The bootstrap wraps `EngineArgs.create_engine_config` (offline `LLM(...)` and the OpenAI server both call it, in
# the process the user started, before any engine process exists): `check_engine_args` runs first (what vLLM itself
# would trip over with a long traceback: a draft model path that does not exist), `check_vllm_config` on the
# configuration vLLM built (the method's settings with the target's vocabulary size, the engine settings a method
# needs). A bad value ends the start in seconds with one `ConfigError`; the workers check again as before.


def _alias_method(model: Any) -> str | None:
    """The method a `specplug.X` proposer path fixes (`specplug.ToolSpec` -> "toolspec"), or None."""
    if not isinstance(model, str) or not model.startswith("specplug."):
        return None
    import specplug

    try:
        found = getattr(specplug, model.split(".", 1)[1])
    except AttributeError:
        return None
    return getattr(found, "default_method", None)


def _block(additional_config: Any) -> Any:
    if isinstance(additional_config, dict):
        return additional_config.get(ADDITIONAL_CONFIG_KEY)
    return None


def adapter_settings(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """Check the vLLM adapter's own settings of `method` (SMC-SD's `trace_path`, `log_interval_s`) and return the
    method's settings without them."""
    from specplug.plugins.vllm_smc.host import ENGINE_MACHINERY

    if method not in ENGINE_MACHINERY:
        return dict(given)
    import math

    from specplug.core.persist import check_output_file
    from specplug.plugins.vllm_smc.smc_settings import PLUGIN_SETTINGS

    rest = dict(given)
    adapter = {key: rest.pop(key, default) for key, default in PLUGIN_SETTINGS.items()}
    check_output_file("trace_path", adapter.get("trace_path"), method=method)
    interval = adapter.get("log_interval_s")
    if (
        isinstance(interval, bool)
        or not isinstance(interval, (int, float))
        or not (math.isfinite(interval) and interval > 0)
    ):
        raise ConfigError("log_interval_s", interval, "a number of seconds > 0", method=method)
    return rest


class _Short:
    """A value shown in an error without flooding it (a whole file given where a settings object belongs)."""

    def __init__(self, value: Any, limit: int = 100) -> None:
        self.value, self.limit = value, limit

    def __repr__(self) -> str:
        text = repr(self.value)
        return text if len(text) <= self.limit else text[: self.limit] + "…"


def check_block(block: Any, *, num_speculative_tokens: int | None = None, vocab_size: int | None = None) -> str:
    """Check an `additional_config.specplug` block without an engine (what `specplug doctor --config` runs) and
    return its method. Raises `ConfigError`."""
    from specplug.core.startup import check_settings

    if not isinstance(block, dict) or not isinstance(block.get("method"), str):
        raise ConfigError(
            f"additional_config.{ADDITIONAL_CONFIG_KEY}", _Short(block), f"a JSON object with a method, e.g. {EXAMPLE}"
        )
    given = dict(block)
    method = given.pop("method")
    rest = adapter_settings(method, given)
    check_settings(method, rest, num_speculative_tokens=num_speculative_tokens, vocab_size=vocab_size)
    return method


def check_engine_args(engine_args: Any) -> None:
    """Before vLLM builds its configuration: the specplug block's shape and the draft model's local path."""
    block = _block(getattr(engine_args, "additional_config", None))
    spec = getattr(engine_args, "speculative_config", None)
    spec = spec if isinstance(spec, dict) else {}
    if block is None and _alias_method(spec.get("model")) is None:
        return  # specplug is not selected: vLLM's own business
    if block is not None and (not isinstance(block, dict) or not isinstance(block.get("method"), str)):
        raise ConfigError(
            f"additional_config.{ADDITIONAL_CONFIG_KEY}", block, f"a JSON object with a method, e.g. {EXAMPLE}"
        )
    method = block["method"] if block is not None else _alias_method(spec.get("model"))
    for key in ("model", "draft_model"):
        check_model_path(f"speculative_config.{key}", spec.get(key), method=method)


def check_model_path(setting: str, value: Any, *, method: str | None) -> None:
    """A draft model given as a local path (absolute, or starting with `.` or `~`) must exist; anything else is a
    hub id or a class path and is vLLM's to resolve."""
    import os

    if not isinstance(value, str) or not value.startswith(("/", ".", "~")):
        return
    if not os.path.exists(os.path.expanduser(value)):
        raise ConfigError(setting, value, "an existing local model directory (this path does not exist)", method=method)


def check_vllm_config(vllm_config: Any) -> str | None:
    """On the configuration vLLM built, before any engine process starts: every check of the selected method's
    settings that needs no engine (memory files against the target's vocabulary size), and the engine settings the
    method needs. Returns the method, or None when specplug is not selected."""
    from specplug.core.startup import check_settings

    spec = getattr(vllm_config, "speculative_config", None)
    method = selected_method(vllm_config)
    if method is None:
        method = _alias_method(getattr(spec, "model", None))
        if method is None:
            return None
        given: dict[str, Any] = {}
    else:
        given = method_settings(vllm_config, method)
    rest = adapter_settings(method, given)
    k = getattr(spec, "num_speculative_tokens", None)
    vocab_size = _vocab_size(vllm_config)
    from specplug.plugins.vllm_smc.host import ENGINE_MACHINERY

    if method in ENGINE_MACHINERY:  # SMC-SD: the machinery's own checks, exactly as its scheduler and runner run them
        from specplug.plugins.vllm_smc.smc_settings import check_scheduler, smc_config_from_vllm

        smc_config_from_vllm(vllm_config)
        check_scheduler(vllm_config)
    else:
        pair = engine_pair(vllm_config) if rest.get("memory_path") else None  # only a memory needs the pair
        config = check_settings(method, rest, num_speculative_tokens=k, vocab_size=vocab_size, pair=pair)
        _pin_resolved(vllm_config, rest, config)
    return method


def _pin_resolved(vllm_config: Any, given: dict[str, Any], config: Any) -> None:
    """Hand the engine what the front end decided, so both serve the same: a memory refused under
    `memory_optional` is dropped, and `lam: auto` becomes the λ, τ and `online` the calibration curve gave."""
    drop_memory = bool(given.get("memory_path")) and getattr(config, "memory_path", "") is None
    auto = str(given.get("lam", "")).strip().lower() == "auto"
    if not (drop_memory or auto):
        return  # nothing decided here; the legacy `model="specplug.X"` form carries no additional_config at all
    extra = vllm_config.additional_config.setdefault(ADDITIONAL_CONFIG_KEY, {})
    if drop_memory:
        extra["memory_path"] = None
    if auto:
        import math

        extra["lam"] = "inf" if config.lam == math.inf else config.lam
        extra["tau"], extra["online"] = config.tau, config.online
        extra.pop("min_agreement", None)


def engine_pair(vllm_config: Any) -> dict[str, str] | None:
    """The engine's (target, draft, tokenizer) identity (`core.model_identity`), to check a memory file against;
    None, with a warning, when it cannot be read (the memory is then served unchecked)."""
    from specplug.core.model_identity import pair_identity, tokenizer_vocab

    model = vllm_config.model_config
    spec = getattr(vllm_config, "speculative_config", None)
    method = getattr(spec, "method", None) or "none"
    try:
        draft = spec.draft_model_config.hf_config.to_dict() if method == "draft_model" else None
        vocab = tokenizer_vocab(
            model.tokenizer, revision=model.tokenizer_revision, trust_remote_code=model.trust_remote_code
        )
        return pair_identity(model.hf_config.to_dict(), vocab, method, draft)
    except Exception as exc:  # an unreadable tokenizer is vLLM's to report; the memory check just cannot run
        log.warning("specplug: cannot identify this engine's (target, draft, tokenizer) pair (%s)", exc)
        return None


def _vocab_size(vllm_config: Any) -> int | None:
    model = getattr(vllm_config, "model_config", None)
    try:
        size = model.get_vocab_size()
    except Exception:  # a configuration without a text vocabulary: nothing to check ids against
        return None
    return size if isinstance(size, int) and size > 0 else None


TOOL_FLAGS = "--enable-auto-tool-choice --tool-call-parser hermes"


def engine_args_method(engine_args: Any) -> str | None:
    """The specplug method engine arguments select (the block's method, or a `specplug.X` proposer's default)."""
    block = _block(getattr(engine_args, "additional_config", None))
    if isinstance(block, dict) and isinstance(block.get("method"), str):
        return block["method"]
    spec = getattr(engine_args, "speculative_config", None)
    return _alias_method(spec.get("model")) if isinstance(spec, dict) else None


def tool_flags_warning(server_args: Any, engine_args: Any) -> str | None:
    """The one-line warning for a method that drafts from request tools (`MethodInfo.reads_request_tools`:
    ToolSpec) behind vLLM's OpenAI server without tool-call parsing, or None.

    vLLM answers every chat request that carries `tools` with HTTP 400 unless the server runs with
    `--enable-auto-tool-choice --tool-call-parser PARSER`; such a method drafts exactly those requests. `server_args`
    is the server's parsed command line (`EngineArgs.from_cli_args` receives it): other callers' namespaces lack
    the server's flags and get no warning."""
    if not hasattr(server_args, "enable_auto_tool_choice"):
        return None
    from specplug.core.plugin_manager import get_plugin_manager

    method = engine_args_method(engine_args)
    info = next((m for m in get_plugin_manager().methods() if m.name == method and m.reads_request_tools), None)
    if info is None:
        return None
    if getattr(server_args, "enable_auto_tool_choice", False) and getattr(server_args, "tool_call_parser", None):
        return None
    return (
        f"specplug: {info.display or info.name} is served without tool-call parsing: vLLM answers every chat "
        f"request that carries `tools` with HTTP 400; start the server with {TOOL_FLAGS} (the parser that matches "
        "the model's tool-call format; hermes for <tool_call> JSON)"
    )
