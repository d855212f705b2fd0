"""`specplug smc-ab`: A/B of SMC-SD inside vLLM against vLLM's own decoding, on the same prompts and settings.

Arms: autoregressive sampling, vLLM's `draft_model` speculative decoding (rejection sampling, lossless), and SMC-SD
at each requested particle count. Every arm runs in its own engine process with the same engine settings (V1
runner, synchronous scheduling, block size 32, prefix caching on, the same batch limits) and the same sampling
settings (temperature, max tokens, one seed per prompt); all prompts are submitted at once after a warm-up on
other prompts. Reported per arm: output tokens per second (tokens the user receives: one particle per request),
target forwards per output token (engine steps that ran the target, from the scheduler), SMC's resample rate and
mean ESS/N, and a quality figure: the mean log-probability per output token under the target at the sampling
temperature, scored afterwards by a separate target pass. SMC-SD and rejection sampling both aim at the target's
own distribution, so a method that degrades text shows up as a lower (or, for mode-seeking, suspiciously higher)
score than AR's; the share of distinct bigrams per output tells repetition loops (high log p, little text) apart.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCHEDULER = "specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler"
ENV = {"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "4", "TOKENIZERS_PARALLELISM": "false",
       "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("smc-ab", help="A/B of SMC-SD inside vLLM vs autoregressive and vLLM draft-model SD")
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
    p.add_argument("--out", type=Path, default=Path("results/smc-ab"))
    p.add_argument("--arm-json", help=argparse.SUPPRESS)  # internal: run one arm in this process


def _arms(args: argparse.Namespace) -> list[dict]:
    arms = [{"label": "ar"}, {"label": f"draft_model k={args.gamma}", "spec": True}]
    for n in (int(x) for x in args.particles.split(",")):
        arms.append({"label": f"SMC-SD N={n} k={args.gamma}", "spec": True, "particles": n})
    return arms


def _prompts(args: argparse.Namespace, model: Path) -> tuple[list[list[int]], list[list[int]]]:
    from transformers import AutoTokenizer

    from specplug.assets import load_dataset, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    records = load_dataset(args.dataset, limit=args.num_prompts + 2)
    prompts = [render_prompt(r, tokenizer) for r in records]
    return prompts[: args.num_prompts], prompts[args.num_prompts :]  # measured, warm-up (never measured)


def run_arm(job: dict) -> dict:
    """Inside one engine process: warm up, then submit every prompt at once and time it."""
    os.environ.update(ENV)
    from vllm import LLM, SamplingParams

    engine: dict[str, Any] = {
        "model": job["model"], "dtype": "float32", "enforce_eager": True, "max_model_len": job["max_model_len"],
        "max_num_seqs": job["max_num_seqs"], "max_num_batched_tokens": 4096, "seed": 0, "block_size": 32,
        "enable_prefix_caching": True, "async_scheduling": False,
    }  # fmt: skip
    arm = job["arm"]
    if arm.get("spec"):
        engine["speculative_config"] = {
            "method": "draft_model",
            "model": job["draft"],
            "num_speculative_tokens": job["gamma"],
        }
    if arm.get("particles"):
        smc = {"method": "smc", "num_particles": arm["particles"], "draft_temperature": job["draft_temperature"]}
        engine.update(additional_config={"specplug": smc}, scheduler_cls=SCHEDULER)
    llm = LLM(**engine)
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    steps = {"n": 0}
    original = scheduler.schedule

    def counting(*a: Any, **k: Any) -> Any:
        output = original(*a, **k)
        steps["n"] += output.total_num_scheduled_tokens > 0  # one target forward
        return output

    scheduler.schedule = counting

    def params(seed: int) -> Any:
        return SamplingParams(temperature=job["temperature"], max_tokens=job["max_tokens"], seed=seed)

    llm.generate([{"prompt_token_ids": p} for p in job["warmup"]], [params(i) for i in range(len(job["warmup"]))])
    steps["n"] = 0
    prompts = [{"prompt_token_ids": p} for p in job["prompts"]]
    started = time.perf_counter()
    outs = llm.generate(prompts, [params(1000 + i) for i in range(len(prompts))], use_tqdm=False)
    wall = time.perf_counter() - started
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    result = {"label": arm["label"], "wall_s": wall, "tokens": tokens, "target_forwards": steps["n"]}
    if arm.get("particles"):
        result["smc"] = scheduler.metrics.snapshot()
    return result


def _score(model: Path, prompts: list[list[int]], outputs: list[list[int]], temperature: float) -> float:
    """Mean log p_T(token) per output token under the target at the sampling temperature."""
    from specplug.reference.models import load_causal_lm
    from specplug.smc_report import nll_per_token

    return -nll_per_token(load_causal_lm(model), prompts, outputs, temperature)


def run(args: argparse.Namespace) -> int:
    if args.arm_json:
        job = json.loads(Path(args.arm_json).read_text())
        Path(job["result"]).write_text(json.dumps(run_arm(job)))
        return 0
    from specplug.assets import pull_model, resolve_model
    from specplug.reference.models import early_exit_checkpoint

    pull_model(args.model)
    model = resolve_model(args.model)
    draft = early_exit_checkpoint(model, args.draft_layers) if args.draft_layers else model
    prompts, warmup = _prompts(args, model)
    args.out.mkdir(parents=True, exist_ok=True)
    particles = max([1] + [int(x) for x in args.particles.split(",")])
    results = []
    for arm in _arms(args):
        job_path, result_path = args.out / "job.json", args.out / f"arm-{len(results)}.json"
        job = {
            "arm": arm, "model": str(model), "draft": str(draft), "gamma": args.gamma, "prompts": prompts,
            "warmup": warmup, "max_tokens": args.max_tokens, "temperature": args.temperature,
            "draft_temperature": args.draft_temperature, "max_num_seqs": len(prompts) * particles,
            "max_model_len": max(map(len, prompts + warmup)) + args.max_tokens + 2 * args.gamma + 8,
            "result": str(result_path),
        }  # fmt: skip
        job_path.write_text(json.dumps(job))
        print(f"[smc-ab] {arm['label']} ...", file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "specplug", "smc-ab", "--arm-json", str(job_path)]
        with (args.out / f"arm-{len(results)}.log").open("w") as log:
            proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENV})
        if proc.returncode != 0:
            print(f"[smc-ab] arm {arm['label']} failed: see {log.name}", file=sys.stderr)
            return 1
        result = json.loads(result_path.read_text())
        result_path.unlink()
        (args.out / f"arm-{len(results)}.log").unlink()  # kept only when the arm fails
        result["quality"] = _score(model, prompts, result["tokens"], args.temperature)
        results.append(result)
        job_path.unlink()
        print(f"[smc-ab] {arm['label']}: {_summary(result)}", file=sys.stderr, flush=True)
    command = "specplug " + " ".join(getattr(args, "argv", ["smc-ab"]))
    (args.out / "results.json").write_text(json.dumps({"command": command, "args": _jsonable(args), "arms": results}))
    report = _report(results, args, command)
    (args.out / "report.md").write_text(report)
    print(report)
    return 0


def _jsonable(args: argparse.Namespace) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}


def _summary(r: dict) -> str:
    tokens = sum(map(len, r["tokens"]))
    speed, forwards = tokens / r["wall_s"], r["target_forwards"] / tokens
    return f"{speed:.1f} tok/s, {forwards:.3f} fwd/token, quality {r['quality']:.3f}"


def distinct_bigrams(outputs: list[list[int]]) -> float:
    """Mean share of distinct token bigrams per output: 1.0 for text that never repeats a pair, near 0 for a loop."""
    shares = [len(set(itertools.pairwise(t))) / (len(t) - 1) for t in outputs if len(t) > 1]
    return sum(shares) / len(shares) if shares else float("nan")


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
