"""CSD's vLLM sampler against vLLM's real RejectionSampler and against the core verifier, on the same flat vLLM
batch (no engine started): λ=∞ equals vLLM's greedy verification; a finite λ equals the core's decisions."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.vllm


def test_lambda_infinity_equals_vllm_and_csd_equals_the_core_verifier() -> None:
    from specplug.bench.overhead import announce, csd_sampler, measure_csd, vllm_batch
    from specplug.core.csd.config import CSDConfig
    from specplug.core.csd.memory import CorrectionMemory
    from specplug.core.csd.verifier import CalibratedChainVerifier
    from specplug.core.metrics import counters
    from specplug.core.types import DraftBatch

    assert measure_csd(batch=4, gamma=3, vocab=512, pairs=50, repeats=1)["lambda_inf_equals_vllm"] is True

    batch, gamma, vocab = 16, 5, 64
    metadata, logits, sampling = vllm_batch(batch, gamma, vocab, seed=3)
    tokens = metadata.draft_token_ids.to(torch.int64).reshape(batch, gamma)
    grid = logits.reshape(batch, gamma + 1, vocab)
    best = grid[:, :gamma].argmax(-1)
    config = CSDConfig(lam=2, tau=0.05)

    def seeded(memory: CorrectionMemory) -> CorrectionMemory:
        miss = tokens != best
        memory.observe(tokens[miss][::2], best[miss][::2])  # half the pairs are one rejection from rescuable
        return memory

    core = CalibratedChainVerifier(seeded(CorrectionMemory()), config).verify(
        DraftBatch(tokens, torch.full((batch,), gamma)), grid
    )
    # the vLLM host's verifier slot and CSD session; the rows' requests announced as one tenant's
    sampler = announce(csd_sampler({"lam": 2, "tau": 0.05}, gamma), batch)
    bank = sampler.session.memory
    seeded(bank.memory())
    got = sampler(metadata, None, logits.clone(), sampling).sampled_token_ids
    assert torch.equal(got.to(torch.int64), core.output_tokens)
    stats = counters(sampler.session)  # counted by the metrics hook from the slot's step announcement
    assert stats.rescued == int(core.num_rescued.sum()) > 0
    assert stats.accepted == int(core.num_accepted.sum())
    # the step's mismatches went to the tenant's own memory; the calibrated memory kept only what it was given
    assert bank.memory("tenant:tenant-0").observations == core.mismatches.shape[0]
    assert bank.memory().observations == int((tokens != best).sum() + 1) // 2
