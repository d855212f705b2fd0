"""SMC-SD on SmolLM2-135M through the reference runner (issue acceptance): with draft = target at equal
temperatures the weights stay uniform (fp32 noise only), nothing resamples, and every cycle is one target
forward committing γ+1 tokens per particle."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_smc_with_draft_equal_to_target_on_smollm2():
    from transformers import AutoTokenizer

    from specplug.assets import load_dataset, render_prompt, resolve_model
    from specplug.core.smc import SMCConfig
    from specplug.reference.models import load_causal_lm
    from specplug.reference.smc_runner import SMCReferenceRunner

    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    prompts = [render_prompt(r, tokenizer) for r in load_dataset("mtbench", limit=3)]
    model = load_causal_lm(path)
    config = SMCConfig(num_particles=4, gamma=4, draft_temperature=1.0, target_temperature=1.0)
    out = SMCReferenceRunner(model, model, config, eos_token_ids=[tokenizer.eos_token_id]).generate(prompts, 26)
    stats = out.stats
    assert float(out.final.log_weights.abs().max()) < 1e-3
    assert sum(stats.resampled) == 0 and min(min(e) for e in stats.ess) > 0.999
    assert stats.target_forwards == 1 + stats.cycles
    # A particle commits γ+1 tokens every cycle; only EOS ends it earlier.
    eos = tokenizer.eos_token_id
    assert all(len(p) == 26 or p[-1] == eos for particles in out.particles for p in particles)
    assert stats.cycles <= 5  # ceil((26 - 1) / (γ + 1)): no cycle committed fewer tokens than that allows
    assert all(c == config.gamma + 1 for c in stats.committed[0])
