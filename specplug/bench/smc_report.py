"""`specplug bench smc-report`: SMC-SD on the reference runner and the per-cycle cost of its bookkeeping.

Two measurements, written as results.json + report.md:
- overhead: one `SMCSampler.cycle` over batch × N particles × γ drafts with a real vocabulary, split into the
  logit work every sampler does (target log-probs of the drafts, bonus sampling) and SMC's own bookkeeping
  (weights, EOS, commit, ESS, resampling, fork plan, lineage copies), next to standard rejection sampling on the
  same drafts;
- reference: SMC-SD end to end on a real model (accepted tokens per target forward, resample rate, ESS
  trajectory, wall time) for a few configurations, with plain target sampling as the quality reference
  (mean target negative log-likelihood per token of the returned text, scored by one fresh forward).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from specplug.bench.config import integers
from specplug.bench.measure import nll_per_token
from specplug.bench.timing import median_ms


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dataset", default="mtbench")
    p.add_argument("--num-prompts", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--draft-layers", type=int, default=20, help="early-exit self-draft: the target's first layers")
    p.add_argument("--overhead-shape", default="64,8,8", help="batch,N,gamma for the overhead measurement")
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--out", default="results/smc")


def measure_overhead(batch: int, particles: int, gamma: int, vocab: int, repeats: int, seed: int = 0) -> dict:
    """Time one cycle at threshold 1 (every group with uneven weights resamples: the worst case)."""
    import torch

    from specplug.core.smc import SMCConfig, SMCSampler, weights
    from specplug.core.types import DraftBatch
    from specplug.core.verifiers.rejection import RejectionSamplingVerifier

    g = torch.Generator().manual_seed(seed)
    config = SMCConfig(num_particles=particles, gamma=gamma, resample_threshold=1.0)

    def inputs(v: int):
        logits = torch.randn((batch, particles, gamma + 1, v), generator=g)
        drafts = torch.randint(0, v, (batch, particles, gamma), generator=g)
        log_q = -3 * torch.rand((batch, particles, gamma), generator=g, dtype=torch.float64)
        return drafts, log_q, logits

    def cycle_fn(v: int):
        drafts, log_q, logits = inputs(v)
        sampler = SMCSampler(config, eos_token_ids=[v - 1])
        state = sampler.start(batch, 2048, seeds=torch.arange(batch))  # a realistic history length
        sampler.first_tokens(state, logits[:, 0, 0])

        def run():
            state.finished.zero_()  # keep every particle live across repeats
            state.lengths.zero_()
            sampler.cycle(state, drafts, log_q, logits)

        return run, (drafts, log_q, logits)

    full, (drafts, log_q, logits) = cycle_fn(vocab)
    cycle_ms = median_ms(full, repeats, warmup=1)
    flat = logits.flatten(0, 1)
    keys = torch.randint(0, 1 << 62, (batch * particles,), generator=g)

    def logit_work():
        weights.target_log_probs(flat[:, :gamma], drafts.flatten(0, 1), config.target_temperature)
        weights.sample_power(flat[:, gamma], config.alpha, config.target_temperature, keys)

    logits_ms = median_ms(logit_work, repeats, warmup=1)
    small, _ = cycle_fn(8)
    bookkeeping_ms = median_ms(
        small, repeats, warmup=1
    )  # the same cycle with an 8-token vocabulary: no logit work left

    verifier = RejectionSamplingVerifier(temperature=1.0)
    q = torch.softmax(torch.randn((batch * particles, gamma, vocab), generator=g), -1)
    draft = DraftBatch(
        tokens=drafts.flatten(0, 1),
        num_tokens=torch.full((batch * particles,), gamma),
        probs=q,
        log_q=log_q.flatten(0, 1),
    )
    rejection_ms = median_ms(lambda: verifier.verify(draft, flat, generator=g), repeats, warmup=1)
    return {
        "batch": batch,
        "num_particles": particles,
        "gamma": gamma,
        "vocab": vocab,
        "rows": batch * particles,
        "positions": batch * particles * (gamma + 1),
        "cycle_ms": cycle_ms,
        "logit_work_ms": logits_ms,
        "bookkeeping_ms": bookkeeping_ms,
        "rejection_sampling_ms": rejection_ms,
        "threads": torch.get_num_threads(),
    }


def reference_runs(args) -> dict:
    from transformers import AutoTokenizer

    from specplug.assets import load_dataset, render_prompt, resolve_model
    from specplug.core.smc import SMCConfig
    from specplug.reference.models import load_causal_lm
    from specplug.reference.runner import ReferenceRunner
    from specplug.reference.smc_runner import SMCReferenceRunner

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    prompts = [render_prompt(r, tokenizer) for r in load_dataset(args.dataset, limit=args.num_prompts)]
    eos = [tokenizer.eos_token_id]
    target = load_causal_lm(path)
    small = load_causal_lm(path, num_layers=args.draft_layers)
    arms = [
        ("draft = target, T_d = T_t = 1, N=4, γ=4", target, SMCConfig(draft_temperature=1.0)),
        (f"draft = first {args.draft_layers} layers, defaults (N=4, γ=4, T_d=0.7)", small, SMCConfig()),
        (f"draft = first {args.draft_layers} layers, N=8, γ=4, T_d=0.7", small, SMCConfig(num_particles=8)),
    ]
    runs = []
    began = time.perf_counter()
    ar = ReferenceRunner(target, eos_token_ids=eos).generate(prompts, args.max_tokens, temperature=1.0, seed=0)
    runs.append(
        {
            "arm": "plain target sampling (T=1), autoregressive",
            "target_forwards": ar.stats.target_forwards,
            "output_tokens": ar.stats.output_tokens,
            "tokens_per_target_forward": ar.stats.output_tokens / ar.stats.target_forwards / len(prompts),
            "wall_s": time.perf_counter() - began,
            "nll_per_token": nll_per_token(target, prompts, ar.tokens, 1.0),
        }
    )
    for label, draft, config in arms:
        print(f"[specplug bench smc-report] {label} ...", file=sys.stderr)
        out = SMCReferenceRunner(target, draft, config, eos_token_ids=eos).generate(prompts, args.max_tokens, seed=0)
        s = out.stats
        tokens = sum(len(t) for t in out.tokens)
        runs.append(
            {
                "arm": f"SMC-SD, {label}",
                "config": config.__dict__,
                "target_forwards": s.target_forwards,
                "cycles": s.cycles,
                "output_tokens": tokens,
                "tokens_per_target_forward": tokens / s.target_forwards / len(prompts),
                "committed_per_particle_cycle": statistics.mean(c for cyc in s.committed for c in cyc),
                "resample_rate": s.resample_rate,
                "mean_ess_fraction_per_cycle": [statistics.mean(e) if e else None for e in s.ess],
                "min_ess_fraction": min(min(e) for e in s.ess if e),
                "refed_tokens": s.refed_tokens,
                "max_abs_log_weight": float(out.final.log_weights.abs().max()),
                "wall_s": s.wall_s,
                "nll_per_token": nll_per_token(target, prompts, out.tokens, config.target_temperature),
            }
        )
    return {"model": args.model, "dataset": args.dataset, "num_prompts": len(prompts), "runs": runs}


def _markdown(results: dict) -> str:
    lines = ["# SMC-SD: reference runner and per-cycle bookkeeping", "", f"Command: `{results['command']}`", ""]
    o = results.get("overhead")
    if o:
        lines += [
            f"## Per-cycle cost, batch {o['batch']} × N {o['num_particles']} × γ {o['gamma']}, vocabulary "
            f"{o['vocab']} (CPU, {o['threads']} threads, median of {results['repeats']})",
            "",
            "| part | ms per cycle |",
            "| --- | --- |",
            f"| whole `SMCSampler.cycle` | {o['cycle_ms']:.1f} |",
            f"| logit work inside it (draft log p_T, bonus sampling) | {o['logit_work_ms']:.1f} |",
            f"| SMC bookkeeping (weights, EOS, commit, ESS, resampling, fork plan, lineage copies) | "
            f"{o['bookkeeping_ms']:.2f} |",
            f"| standard rejection sampling on the same drafts (core verifier, float64) | "
            f"{o['rejection_sampling_ms']:.1f} |",
            "",
        ]
    r = results.get("reference")
    if r:
        lines += [
            f"## End to end on {r['model']} (reference runner, {r['num_prompts']} {r['dataset']} prompts, "
            f"{results['max_tokens']} new tokens)",
            "",
            "| arm | tokens / target forward / request | resample rate | min ESS/N | target NLL / token | wall s |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for run in r["runs"]:
            lines.append(
                f"| {run['arm']} | {run['tokens_per_target_forward']:.2f} | {run.get('resample_rate', 0):.2f} | "
                f"{run.get('min_ess_fraction', 1.0):.2f} | {run['nll_per_token']:.3f} | {run['wall_s']:.1f} |"
            )
        lines += ["", "ESS/N per cycle (mean over requests still running):", ""]
        for run in r["runs"]:
            if "mean_ess_fraction_per_cycle" in run:
                traj = ", ".join(f"{e:.2f}" for e in run["mean_ess_fraction_per_cycle"] if e is not None)
                lines.append(f"- {run['arm']}: {traj}")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from specplug.core.files import write_atomic

    batch, particles, gamma = integers("overhead_shape", args.overhead_shape, count=3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": "specplug " + shlex.join(args.argv),
        "repeats": args.repeats,
        "max_tokens": args.max_tokens,
        "torch": torch.__version__,
    }
    print("[specplug bench smc-report] measuring per-cycle overhead ...", file=sys.stderr)
    results["overhead"] = measure_overhead(batch, particles, gamma, args.vocab, args.repeats)
    if not args.skip_reference:
        results["reference"] = reference_runs(args)
    write_atomic(out / "results.json", json.dumps(results, indent=2))
    report = _markdown(results)
    write_atomic(out / "report.md", report)
    print(report)
    print(f"[specplug bench smc-report] wrote {out / 'results.json'} and {out / 'report.md'}", file=sys.stderr)
    return 0
