"""SMC settings read from a real vLLM engine configuration (EngineArgs → VllmConfig, no engine started)."""

from __future__ import annotations

import copy

import pytest

from specplug.core.errors import ConfigError

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_config():
    from vllm.engine.arg_utils import EngineArgs

    from specplug.assets import pull_model, resolve_model

    pull_model("smollm2-135m")
    model = str(resolve_model("smollm2-135m"))
    return EngineArgs(
        model=model,
        dtype="float32",
        speculative_config={"method": "draft_model", "model": model, "num_speculative_tokens": 3},
        additional_config={"specplug": {"method": "smc", "num_particles": 6, "draft_temperature": 0.9}},
        enable_prefix_caching=True,
        scheduler_cls="specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler",  # the front-end check requires it
    ).create_engine_config()


def test_settings_come_from_vllm_flags(vllm_config):
    from specplug.plugins.vllm_smc.smc_settings import smc_config_from_vllm

    config = smc_config_from_vllm(vllm_config)
    assert (config.num_particles, config.gamma, config.draft_temperature) == (6, 3, 0.9)
    assert config.resample_threshold == 0.5  # the core's default where the user said nothing


def _broken(vllm_config, change):
    from specplug.plugins.vllm_smc.smc_settings import smc_config_from_vllm

    cfg = copy.deepcopy(vllm_config)
    change(cfg)
    with pytest.raises(ConfigError) as info:
        smc_config_from_vllm(cfg)
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        (lambda c: setattr(c, "additional_config", {}), "additional_config.specplug"),
        (lambda c: c.additional_config["specplug"].update(num_particles=0), "num_particles"),
        (lambda c: c.additional_config["specplug"].update(num_particle=8), "num_particle"),
        (lambda c: c.additional_config["specplug"].update(gamma=5), "gamma"),
        (lambda c: c.additional_config["specplug"].update(method="csd"), "method"),
        (lambda c: setattr(c, "speculative_config", None), "speculative_config.method"),
        (lambda c: setattr(c.scheduler_config, "async_scheduling", True), "async_scheduling"),
        (lambda c: setattr(c.cache_config, "enable_prefix_caching", False), "enable_prefix_caching"),
        (lambda c: setattr(c.scheduler_config, "max_num_seqs", 4), "max_num_seqs"),
        (lambda c: setattr(c.scheduler_config, "max_num_batched_tokens", 20), "max_num_batched_tokens"),
        (lambda c: c.additional_config["specplug"].update(target_temperature=0.5), "target_temperature"),
    ],
)
def test_bad_settings_are_refused_at_startup(vllm_config, change, setting):
    message = _broken(vllm_config, change)
    assert setting in message and "allowed" in message


def test_adapter_settings_are_kept_apart_from_the_algorithm(vllm_config):
    from specplug.plugins.vllm_smc.smc_settings import smc_config_from_vllm, smc_plugin_settings

    cfg = copy.deepcopy(vllm_config)
    cfg.additional_config["specplug"].update(trace_path="/tmp/trace.jsonl", log_interval_s=2.0)
    assert smc_config_from_vllm(cfg).num_particles == 6  # the algorithm does not see the adapter's keys
    assert smc_plugin_settings(cfg) == {"trace_path": "/tmp/trace.jsonl", "log_interval_s": 2.0}


def test_smc_needs_its_scheduler(vllm_config):
    from specplug.plugins.vllm_smc.smc_settings import SCHEDULER_CLS, check_scheduler

    cfg = copy.deepcopy(vllm_config)
    cfg.scheduler_config.scheduler_cls = None  # vLLM's default
    with pytest.raises(ConfigError) as info:
        check_scheduler(cfg)  # vLLM's default scheduler: particles would be unrelated requests
    assert "scheduler_cls" in str(info.value) and SCHEDULER_CLS in str(info.value)
    cfg.scheduler_config.scheduler_cls = SCHEDULER_CLS
    check_scheduler(cfg)
