"""Lossless on a real model: ToolSpec drafts verified greedily by the reference runner give SmolLM2-135M's own
greedy output (fp32) on BFCL single-turn prompts, cold and with a memory filled from other BFCL prompts.

A divergence is allowed only at a genuine near-tie (top-2 logit gap below NEAR_TIE at the first differing token,
checked here by a fresh forward): verifying several tokens in one forward reorders floating-point sums.
"""

from __future__ import annotations

import pytest

from specplug.bench.measure import NEAR_TIE, divergence_gaps

pytestmark = pytest.mark.slow

NUM_PROMPTS, MAX_TOKENS = 12, 96


@pytest.fixture(scope="module")
def setup():
    from transformers import AutoTokenizer

    from specplug.assets import load_dataset, render_prompt, resolve_model
    from specplug.reference.models import load_causal_lm
    from specplug.reference.runner import ReferenceRunner

    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    records = load_dataset("bfcl", split="single_turn", limit=2 * NUM_PROMPTS)
    model = load_causal_lm(path)
    eos = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    runner = ReferenceRunner(model, eos_token_ids=eos)
    prompts = [render_prompt(r, tokenizer) for r in records]
    ar = runner.generate(prompts[:NUM_PROMPTS], MAX_TOKENS)
    return tokenizer, model, runner, records, prompts, ar


def _contexts(records, prompts, ids):
    from specplug.core.types import RequestContext

    return [RequestContext(f"r{i}", prompts[i], tools=records[i].tools) for i in ids]


def _diverged(model, prompts, want_all, got_all) -> int:
    gaps = divergence_gaps(model, prompts, want_all, got_all)
    assert all(gap < NEAR_TIE for gap in gaps.values()), f"divergences that are not near-ties: {gaps}"
    return len(gaps)


def test_toolspec_is_greedy_output_cold_and_warm(setup, record_property) -> None:
    from specplug.core.toolspec.config import ToolSpecConfig
    from specplug.core.toolspec.drafter import ToolSpecDrafter

    tokenizer, model, runner, records, prompts, ar = setup
    drafter = ToolSpecDrafter(ToolSpecConfig(num_speculative_tokens=8), tokenizer)
    measured = range(NUM_PROMPTS)

    drafter.bind(_contexts(records, prompts, measured))
    cold = runner.generate(prompts[:NUM_PROMPTS], MAX_TOKENS, proposer=drafter)
    cold_sources = dict(drafter.drafted)

    fresh = ToolSpecDrafter(ToolSpecConfig(num_speculative_tokens=8), tokenizer)
    fill = range(NUM_PROMPTS, 2 * NUM_PROMPTS)  # disjoint prompts fill the memory
    fresh.bind(_contexts(records, prompts, fill))
    runner.generate([prompts[i] for i in fill], MAX_TOKENS, proposer=fresh)
    assert fresh.bank.summary()["answers"] == NUM_PROMPTS
    fresh.drafted.clear()
    fresh.bind(_contexts(records, prompts, measured))
    warm = runner.generate(prompts[:NUM_PROMPTS], MAX_TOKENS, proposer=fresh)

    diverged = {
        "cold": _diverged(model, prompts[:NUM_PROMPTS], ar.tokens, cold.tokens),
        "warm": _diverged(model, prompts[:NUM_PROMPTS], ar.tokens, warm.tokens),
    }
    for name, run in (("cold", cold), ("warm", warm)):
        record_property(f"{name}_mean_accepted_length", round(run.stats.mean_accepted_length, 3))
        record_property(f"{name}_diverged", diverged[name])
    record_property("cold_sources", cold_sources)
    record_property("warm_sources", dict(fresh.drafted))
    assert cold_sources.get("schema", 0) > 0 and fresh.drafted["memory"] > 0
    assert cold.stats.mean_accepted_length > 1.5 and warm.stats.mean_accepted_length > 1.5
    assert cold.stats.target_forwards_per_token < 0.7
