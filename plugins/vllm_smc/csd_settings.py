"""CSD's vLLM arm: settings from vLLM's own flags, checked once at engine startup.

The drafter is whichever greedy chain proposer vLLM already runs (`ngram`, `draft_model`, EAGLE/MTP, `suffix`…),
chosen with `--speculative-config`; CSD replaces only the acceptance rule, and its settings come through
`--additional-config '{"specplug": {"method": "csd", "lam": 6, "tau": 0.01, "memory_path": "ocm.json"}}'`.
Reads attributes only (no vLLM import), so it can be checked without starting an engine.
"""

from __future__ import annotations

from typing import Any

from specplug.core.csd.config import METHOD, CSDConfig
from specplug.core.errors import ConfigError
from specplug.plugins.vllm_smc.settings import method_settings

EXAMPLE = (
    '--speculative-config \'{"method": "ngram", "num_speculative_tokens": 6}\' '
    '--additional-config \'{"specplug": {"method": "csd"}}\''
)


def csd_config_from_vllm(vllm_config: Any) -> CSDConfig:
    """The validated CSD settings of a vLLM engine configuration (`VllmConfig`)."""
    given = method_settings(vllm_config, METHOD)
    spec = getattr(vllm_config, "speculative_config", None)
    if spec is None or getattr(spec, "num_speculative_tokens", None) is None:
        raise ConfigError(
            "speculative_config", None, f"a speculative method that drafts, e.g. {EXAMPLE}", method=METHOD
        )
    gamma = spec.num_speculative_tokens
    if "gamma" in given and given["gamma"] != gamma:
        raise ConfigError(
            "gamma", given["gamma"], f"omitted, or equal to num_speculative_tokens ({gamma})", method=METHOD
        )
    rule = getattr(spec, "rejection_sample_method", "standard")
    if rule != "standard":
        raise ConfigError(
            "speculative_config.rejection_sample_method",
            rule,
            '"standard" (CSD replaces the acceptance rule; it cannot be combined with another one)',
            method=METHOD,
        )
    return CSDConfig.from_mapping({**given, "gamma": gamma})
