"""CSD's vLLM settings from a real engine configuration (EngineArgs → VllmConfig, no engine started), and the
request-time refusals through vLLM's real SamplingParams."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest

from specplug.core.errors import ConfigError

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_config():
    from vllm.engine.arg_utils import EngineArgs

    from specplug.assets import resolve_model

    return EngineArgs(
        model=str(resolve_model("smollm2-135m")),
        dtype="float32",
        speculative_config={"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4},
        additional_config={"specplug": {"method": "csd", "lam": 3, "tau": 0.05}},
    ).create_engine_config()


def csd_config_from_vllm(vllm_config):
    """The validated CSD settings the vLLM host's session verifies with."""
    from specplug.plugins.vllm_smc.host import open_session

    return open_session(vllm_config).verifier.config


def test_settings_come_from_vllm_flags(vllm_config) -> None:
    from specplug.plugins.vllm_smc.settings import selected_method

    config = csd_config_from_vllm(vllm_config)
    assert (config.lam, config.tau, config.gamma, config.namespace) == (3, 0.05, 5, "default")
    assert selected_method(vllm_config) == "csd"


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        (lambda c: c.additional_config["specplug"].update(lam=0), "lam=0"),
        (lambda c: c.additional_config["specplug"].update(tua=0.1), "tua"),
        (lambda c: c.additional_config["specplug"].update(gamma=9), "gamma=9"),
        (lambda c: setattr(c.speculative_config, "rejection_sample_method", "synthetic"), "rejection_sample_method"),
        (lambda c: setattr(c, "speculative_config", None), "speculative_config"),
        (lambda c: c.additional_config["specplug"].update(method="smcc"), "method"),
    ],
)
def test_bad_settings_are_refused_at_startup(vllm_config, change, setting: str) -> None:
    broken = SimpleNamespace(**{k: copy.deepcopy(getattr(vllm_config, k)) for k in ("additional_config",)})
    broken.speculative_config = copy.deepcopy(vllm_config.speculative_config)
    change(broken)
    with pytest.raises(ConfigError, match=setting):
        csd_config_from_vllm(broken)


def test_lambda_infinity_passes_as_a_string() -> None:
    given = SimpleNamespace(
        additional_config={"specplug": {"method": "csd", "lam": "inf"}},
        speculative_config=SimpleNamespace(num_speculative_tokens=4, rejection_sample_method="standard"),
    )
    assert csd_config_from_vllm(given).lam == math.inf


def test_sampled_and_logprobs_requests_are_refused_with_reasons() -> None:
    from vllm import SamplingParams

    from specplug.plugins.vllm_smc.admission import CSDAdmission

    CSDAdmission.validate_params(SamplingParams(temperature=0.0, max_tokens=8))
    with pytest.raises(ValueError, match="CSD verifies greedy decoding"):
        CSDAdmission.validate_params(SamplingParams(temperature=0.7))
    with pytest.raises(ValueError, match="logprobs"):
        CSDAdmission.validate_params(SamplingParams(temperature=0.0, logprobs=2))
