"""SMC-SD's vLLM machinery settings, checked once at engine startup.

Users select SMC-SD with vLLM's flags: the draft model and γ through `--speculative-config
'{"method": "draft_model", "model": DRAFT, "num_speculative_tokens": γ}'`, the SMC settings through
`--additional-config '{"specplug": {"method": "smc", "num_particles": 4, ...}}'` and the group scheduler through
`--scheduler-cls`. Everything that would make the run silently wrong is refused here with one `ConfigError` naming
the setting, the value and what is allowed. Reads attributes only (no vLLM import).
"""

from __future__ import annotations

from typing import Any

from specplug.core.errors import ConfigError
from specplug.core.smc.config import METHOD, SMCConfig
from specplug.plugins.vllm_smc.settings import method_settings

# Settings of the vLLM adapter itself (not of the algorithm): where to write the per-event trace, how often to log.
PLUGIN_SETTINGS = {"trace_path": None, "log_interval_s": 10.0}
SCHEDULER_CLS = "specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler"


def smc_plugin_settings(vllm_config: Any) -> dict[str, Any]:
    """The adapter's own settings (`trace_path`, `log_interval_s`) from `additional_config.specplug`."""
    given = method_settings(vllm_config, METHOD)
    return {key: given.get(key, default) for key, default in PLUGIN_SETTINGS.items()}


def smc_config_from_vllm(vllm_config: Any) -> SMCConfig:
    """The validated SMC settings of a vLLM engine configuration (`VllmConfig`)."""
    given = method_settings(vllm_config, METHOD)
    for key in PLUGIN_SETTINGS:
        given.pop(key, None)
    if "target_temperature" in given:
        raise ConfigError(
            "target_temperature",
            given["target_temperature"],
            "omitted: on vLLM the target temperature is each request's own `temperature`",
            method=METHOD,
        )

    spec = getattr(vllm_config, "speculative_config", None)
    spec_method = getattr(spec, "method", None)
    if spec_method != "draft_model":
        raise ConfigError(
            "speculative_config.method",
            spec_method,
            '"draft_model" with the draft model and num_speculative_tokens = γ, e.g. --speculative-config '
            '\'{"method": "draft_model", "model": DRAFT, "num_speculative_tokens": 4}\'',
            method=METHOD,
        )
    gamma = spec.num_speculative_tokens
    if "gamma" in given and given["gamma"] != gamma:
        allowed = f"omitted, or equal to num_speculative_tokens ({gamma})"
        raise ConfigError("gamma", given["gamma"], allowed, method=METHOD)
    config = SMCConfig.from_mapping({**given, "gamma": gamma})
    _check_engine(vllm_config, config)
    return config


def check_scheduler(vllm_config: Any) -> None:
    """SMC-SD needs its group-aware scheduler; without it every particle would be an unrelated request."""
    chosen = vllm_config.scheduler_config.scheduler_cls
    if chosen is None:
        name = "vLLM's default"
    else:
        name = chosen if isinstance(chosen, str) else f"{chosen.__module__}.{chosen.__qualname__}"
    # A subclass of ours is ours too; compared by qualified name so this module never imports the scheduler
    # (which imports this module).
    lineage = [f"{c.__module__}.{c.__qualname__}" for c in chosen.__mro__] if isinstance(chosen, type) else [name]
    if SCHEDULER_CLS not in lineage:
        raise ConfigError("scheduler_cls", name, f"{SCHEDULER_CLS} (--scheduler-cls)", method=METHOD)


def _check_engine(vllm_config: Any, config: SMCConfig) -> None:
    scheduler = vllm_config.scheduler_config
    need = {
        "async_scheduling": (
            bool(getattr(scheduler, "async_scheduling", False)),
            "off (--no-async-scheduling): a cycle's fork plan must be applied before the next step is scheduled",
        ),
        "enable_prefix_caching": (
            not vllm_config.cache_config.enable_prefix_caching,
            "on: forked particles share their ancestor's full KV blocks through the prefix cache",
        ),
        "pipeline_parallel_size": (
            vllm_config.parallel_config.pipeline_parallel_size != 1,
            "1 (tensor parallelism is supported, pipeline parallelism is not)",
        ),
        "kv_transfer_config": (
            getattr(vllm_config, "kv_transfer_config", None) is not None,
            "unset: disaggregated KV transfer cannot follow particle forks",
        ),
    }
    for setting, (bad, allowed) in need.items():
        if bad:
            raise ConfigError(setting, "as configured", allowed, method=METHOD)
    n, block = config.num_particles, config.block_size
    if scheduler.max_num_seqs < n:
        raise ConfigError(
            "max_num_seqs", scheduler.max_num_seqs, f">= num_particles ({n}): a group runs as one batch", method=METHOD
        )
    if scheduler.max_num_batched_tokens < n * block:
        raise ConfigError(
            "max_num_batched_tokens",
            scheduler.max_num_batched_tokens,
            f">= num_particles × (γ + 1) = {n * block}: one verify step scores a whole group",
            method=METHOD,
        )
