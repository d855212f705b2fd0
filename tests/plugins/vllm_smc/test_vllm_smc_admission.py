"""Request-time refusals, checked with vLLM's real SamplingParams and its real validation entry point."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_api():
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import validate_logits_processors_parameters

    from specplug.plugins.vllm_smc.admission import SMCAdmission

    return SamplingParams, validate_logits_processors_parameters, SMCAdmission


def test_plain_sampling_request_is_admitted(vllm_api):
    sampling, validate, admission = vllm_api
    validate([admission], sampling(temperature=0.7, max_tokens=32, seed=3))


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"n": 2}, "n=2"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 20}, "top_k"),
        ({"top_p": 0.9}, "top_p"),
        ({"repetition_penalty": 1.2}, "repetition_penalty"),
        ({"logprobs": 5}, "logprobs"),
        ({"stop": ["\n\n"]}, "stop strings"),
        ({"min_tokens": 4}, "min_tokens"),
        ({"ignore_eos": True}, "ignore_eos"),
    ],
)
def test_unsupported_requests_get_a_validation_error(vllm_api, settings, reason):
    sampling, validate, admission = vllm_api
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match=reason) as info:
        validate([admission], sampling(temperature=settings.pop("temperature", 1.0), **settings))
    assert "SMC-SD" in str(info.value)


def test_every_reason_is_reported_at_once(vllm_api):
    sampling, _, admission = vllm_api
    from specplug.core.smc.plugin import unsupported_features
    from specplug.plugins.vllm_smc.host import sampling_settings

    reasons = unsupported_features(sampling_settings(sampling(temperature=1.0, top_p=0.5, logprobs=1, stop=["x"])))
    assert len(reasons) == 3
    assert admission.validate_params(sampling(temperature=1.0)) is None
