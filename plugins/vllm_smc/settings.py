"""Which specplug method a vLLM engine runs, and its settings, from vLLM's own configuration.

Users select a method with vLLM's flags: `--additional-config '{"specplug": {"method": "csd", ...}}'` (the other
keys are the method's settings, validated by the plugin that builds it) beside `--speculative-config` for the
drafter. Reads attributes only (no vLLM import), so it can be checked without starting an engine.
"""

from __future__ import annotations

from typing import Any

from specplug.core.errors import ConfigError

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
