"""`specplug bench smc-ab`: A/B of SMC-SD inside vLLM against vLLM's own decoding, on the same prompts and settings.

Arms: autoregressive sampling, vLLM's `draft_model` speculative decoding (rejection sampling, lossless), and SMC-SD
at each requested particle count. Every arm runs in its own engine process (the bench's vLLM worker) with the
same engine settings (V1 runner, synchronous scheduling, block size 32, prefix caching on, the same batch limits)
and the same sampling settings (temperature, max tokens, one seed per prompt); all prompts are submitted at once
after a warm-up on other prompts. The prompts are the bench's workload (`specplug bench run` renders the same).
Reported per arm: output tokens per second (tokens the user receives: one particle per request), target forwards
per output token (engine steps that ran the target, from the scheduler), SMC's resample rate and mean ESS/N, and a
quality figure: the mean log-probability per output token under the target at the sampling temperature, scored
afterwards by a separate target pass. SMC-SD and rejection sampling both aim at the target's own distribution, so
a method that degrades text shows up as a lower (or, for mode-seeking, suspiciously higher) score than AR's; the
share of distinct bigrams per output tells repetition loops (high log p, little text) apart.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from specplug.bench.config import integers
from specplug.bench.measure import distinct_bigrams, nll_per_token


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument(
        "--draft-layers", type=int, default=20, help="early-exit draft: the target's first L layers (0: the target)"
    )
    p.add_argument("--dataset", default="mtbench")
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--gamma", type=int, default=3)
    p.add_argument("--particles", default="2,4", help="comma-separated N for the SMC-SD arms")
    p.add_argument("--draft-temperature", type=float, default=0.7)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--arm-timeout", type=float, default=3600.0, help="seconds before an arm is declared failed")
    p.add_argument("--out", type=Path, default=Path("results/smc-ab"))


def _arms(args: argparse.Namespace, particles: list[int]) -> list[dict]:
    arms = [{"label": "ar"}, {"label": f"draft_model k={args.gamma}", "spec": True}]
    arms += [{"label": f"SMC-SD N={n} k={args.gamma}", "spec": True, "particles": n} for n in particles]
    return arms


def _engine_args(arm: dict, args: argparse.Namespace, draft: dict, max_num_seqs: int, max_model_len: int) -> dict:
    """The bench's shared engine settings, with the batch limits and prefix caching SMC-SD's forks rely on."""
    from specplug.bench.vllm_engine import engine_args

    engine = engine_args(max_num_seqs, max_model_len)
    engine.update(max_num_batched_tokens=4096, block_size=32, enable_prefix_caching=True)
    if arm.get("spec"):
        engine["speculative_config"] = draft
    if arm.get("particles"):
        from specplug.plugins.vllm_smc.smc_settings import SCHEDULER_CLS

        smc = {"method": "smc", "num_particles": arm["particles"], "draft_temperature": args.draft_temperature}
        engine.update(additional_config={"specplug": smc}, scheduler_cls=SCHEDULER_CLS)
    return engine


def run(args: argparse.Namespace) -> int:
    from specplug.assets import resolve_model
    from specplug.bench.arms import parse_arm
    from specplug.bench.vllm_engine import ENGINE_ENV, run_worker, speculative_config
    from specplug.bench.workload import build_workload

    particles = integers("particles", args.particles)
    model = resolve_model(args.model)
    layers = f":layers={args.draft_layers}" if args.draft_layers else ""
    draft = speculative_config(parse_arm(f"draft_model:model={model}:k={args.gamma}{layers}"))
    workload = build_workload(model, args.dataset, args.num_prompts)  # measured, then 2 warm-up prompts
    prompts, warmup = workload.prompts, workload.warmup
    max_model_len = max(map(len, prompts + warmup)) + args.max_tokens + 2 * args.gamma + 8
    args.out.mkdir(parents=True, exist_ok=True)
    scorer: dict[str, Any] = {}
    results = []
    for arm in _arms(args, particles):
        job = {
            "loop": "sampled",
            "model": str(model),
            "engine_args": _engine_args(arm, args, draft, len(prompts) * max(particles), max_model_len),
            "env": {**ENGINE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},  # the loop counts steps at the scheduler
            "prompts": prompts,
            "warmup": warmup,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
        }
        print(f"[smc-ab] {arm['label']} ...", file=sys.stderr, flush=True)
        try:
            result = run_worker(job, f"arm {arm['label']}", args.arm_timeout, len(prompts) + len(warmup))
        except (RuntimeError, TimeoutError) as exc:
            print(f"[smc-ab] {exc}", file=sys.stderr)
            return 1
        result["label"] = arm["label"]
        result["quality"] = _quality(scorer, model, prompts, result["tokens"], args.temperature)
        results.append(result)
        print(f"[smc-ab] {arm['label']}: {_summary(result)}", file=sys.stderr, flush=True)
    command = "specplug " + shlex.join(getattr(args, "argv", ["bench", "smc-ab"]))
    (args.out / "results.json").write_text(json.dumps({"command": command, "args": _jsonable(args), "arms": results}))
    report = _report(results, args, command)
    (args.out / "report.md").write_text(report)
    print(report)
    return 0


def _quality(scorer: dict, model: Path, prompts: list[list[int]], outputs: list[list[int]], temperature: float):
    """Mean log p_T(token) per output token under the target at the sampling temperature (target loaded once)."""
    if "target" not in scorer:
        from specplug.reference.models import load_causal_lm

        scorer["target"] = load_causal_lm(model)
    return -nll_per_token(scorer["target"], prompts, outputs, temperature)


def _jsonable(args: argparse.Namespace) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if not callable(v)}


def _summary(r: dict) -> str:
    tokens = sum(map(len, r["tokens"]))
    speed, forwards = tokens / r["wall_s"], r["target_forwards"] / tokens
    return f"{speed:.1f} tok/s, {forwards:.3f} fwd/token, quality {r['quality']:.3f}"


def _report(results: list[dict], args: argparse.Namespace, command: str) -> str:
    base = sum(map(len, results[0]["tokens"])) / results[0]["wall_s"]
    lines = [
        f"# SMC-SD inside vLLM-CPU: A/B on {args.num_prompts} {args.dataset} prompts",
        "",
        f"Target {args.model} fp32, draft = "
        + (f"its first {args.draft_layers} layers (early exit)" if args.draft_layers else "the target itself")
        + f", γ = {args.gamma}, "
        f"temperature {args.temperature}, SMC draft temperature {args.draft_temperature}, max {args.max_tokens} "
        "tokens, all prompts submitted at once, one engine per arm with identical settings.",
        "",
        "| arm | output tok/s | ÷ ar | target fwd / output token | resample rate | mean ESS/N "
        "| mean log p per token | distinct bigrams | output tokens |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        tokens = sum(map(len, r["tokens"]))
        speed = tokens / r["wall_s"]
        smc = r.get("smc")
        rate = f"{smc['resample_rate']:.2f}" if smc else "—"
        ess = f"{smc['mean_ess']:.2f}" if smc else "—"
        lines.append(
            f"| {r['label']} | {speed:.1f} | {speed / base:.2f} | {r['target_forwards'] / tokens:.3f} | {rate} "
            f"| {ess} | {r['quality']:.3f} | {distinct_bigrams(r['tokens']):.2f} | {tokens} |"
        )
    lines += [
        "",
        "Quality: the mean log-probability per output token under the target (at the sampling temperature) is",
        "close to `ar`'s for a sampler that follows the target; a clearly higher value means mode-seeking or",
        "repetitive text, which the share of distinct bigrams shows (`ar`'s is the reference).",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)
