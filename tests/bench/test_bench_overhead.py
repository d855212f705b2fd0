"""`specplug bench overhead` on vLLM's real samplers and proposers (imported, no engine started; tiny shapes)."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.vllm


def test_csd_matches_vllm_at_lambda_inf_and_learns_only_online() -> None:
    from specplug.bench.overhead import announce, csd_sampler, measure_csd, vllm_batch

    figures = measure_csd(batch=4, gamma=3, vocab=512, pairs=50, repeats=1)
    assert figures["lambda_inf_equals_vllm"] is True and figures["memory_pairs"] == 50
    timings = ("vllm_standard_ms", "csd_frozen_memory_ms", "csd_online_ms", "csd_online_4_tenants_ms")
    assert all(figures[k] > 0 for k in timings)

    metadata, logits, sampling = vllm_batch(8, 3, 64, seed=5)
    online, frozen = announce(csd_sampler({}, 3), 8), announce(csd_sampler({"online": False}, 3), 8)
    anonymous = csd_sampler({}, 3)  # rows nobody announced: no tenant, so nothing is learned
    for sampler in (online, frozen, anonymous):
        sampler(metadata, None, logits.clone(), sampling)
    # 60% of the drafts agree with the target: the others are rejections the online memory counts (session hook),
    # in the tenant's own memory; the calibrated one stays as it was.
    assert online.session.memory.memory("tenant:tenant-0").observations > 0
    assert online.session.verifier.memory.observations == 0
    assert frozen.session.memory.namespaces() == ["default"] and frozen.session.verifier.memory.observations == 0
    assert anonymous.session.memory.namespaces() == ["default"]
    assert online.session.report()["steps"]["steps"] == 1


def test_smc_runs_both_sides_on_the_same_batch() -> None:
    from specplug.bench.overhead import measure_smc

    figures = measure_smc(groups=2, particles=2, gamma=2, vocab=512, repeats=2)
    timed = [k for k in figures if k.endswith("_ms")]
    assert {"vllm_rejection_sampler_ms", "smc_verifier_ms", "smc_draft_ms"} <= set(timed)
    assert all(figures[k] > 0 for k in timed)


@pytest.mark.slow
def test_toolspec_and_vllm_ngram_draft_the_same_steps() -> None:
    from specplug.bench.overhead import measure_toolspec

    figures = measure_toolspec(batch=2, k=4, repeats=1)
    assert {"vllm_ngram", "toolspec"} <= set(figures["per_step_ms"]) and figures["steps_per_repeat"] > 0
    if importlib.util.find_spec("arctic_inference") is not None:  # vLLM's suffix proposer, on the same steps
        assert figures["draft_tokens"]["vllm_suffix"] > 0
    assert figures["draft_tokens"]["toolspec"] > 0
