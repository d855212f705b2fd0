"""`specplug toolspec remember`: build a warm ToolSpec retrieval memory from a prompt slice.

It serves the slice with ToolSpec (cold) on an engine — vLLM (the real engine, through the same worker as
`specplug bench`) or the reference runner — and writes the answers, per tenant "bench" (the tenant `specplug
bench` uses), to a memory file. The digests of the prompts go into the file, so `specplug bench` refuses to
measure a `toolspec:memory=FILE` arm on prompts whose answers it holds; `--skip` picks a disjoint slice.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from specplug.core.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from specplug.bench.workload import add_memory_slice_arguments

    toolspec = sub.add_parser("toolspec", help="ToolSpec tools (schema-aware, retrieval-based drafting)")
    commands = toolspec.add_subparsers(dest="toolspec_command", metavar="TOOLSPEC_COMMAND", required=True)
    p = commands.add_parser(
        "remember",
        help="serve a prompt slice with ToolSpec and save its answers as a retrieval memory file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_memory_slice_arguments(p, dataset="bfcl:single_turn", num_prompts=64, skip=66)
    p.add_argument("--arm", default="toolspec", help="the ToolSpec settings, as a bench arm (toolspec:k=8:…)")

    o = commands.add_parser(
        "overhead", help="drafting time per step: ToolSpec vs vLLM's ngram proposer on the same batch (needs vLLM)"
    )
    o.add_argument("--batch", type=int, default=16)
    o.add_argument("--k", type=int, default=8)
    o.add_argument("--skip", type=int, default=0)
    o.add_argument("--repeats", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    if args.toolspec_command == "overhead":
        import json

        from specplug.toolspec_overhead import measure

        print(json.dumps(measure(args.batch, args.k, args.skip, args.repeats), indent=2))
        return 0
    from specplug.bench.arms import parse_arm
    from specplug.bench.workload import memory_slice

    try:
        arm = parse_arm(args.arm)
        if arm.kind != "toolspec" or arm.options["memory"]:
            raise ConfigError("arm", args.arm, "a toolspec arm without memory= (the memory starts cold)")
        model_path, workload = memory_slice(
            args.model, args.dataset, args.num_prompts, args.skip, args.concurrency, args.max_tokens
        )
    except ConfigError as exc:
        print(f"specplug toolspec remember: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    began = time.perf_counter()
    print(
        f"[specplug toolspec] serving {len(workload.prompts)} prompts of {args.dataset} (after {args.skip}) "
        f"with ToolSpec on {args.engine} ...",
        file=sys.stderr,
    )
    if args.engine == "vllm":
        from specplug.bench import vllm_engine

        vllm_engine.run_arm(
            arm, model_path, workload, [args.concurrency], args.max_tokens, args.arm_timeout, save_memory=out
        )
    else:
        _remember_reference(arm, model_path, workload, args, out)
    from specplug.core.toolspec.memory import InvocationMemoryBank

    summary = InvocationMemoryBank.load(out).summary()
    print(
        f"[specplug toolspec] wrote {out}: {summary['answers']} answers, {summary['tokens']} tokens "
        f"in {time.perf_counter() - began:.0f}s",
        file=sys.stderr,
    )
    return 0


def _remember_reference(arm, model_path, workload, args, out: Path) -> None:
    from specplug.bench.reference_engine import bind_requests, make_proposer
    from specplug.reference.models import load_causal_lm
    from specplug.reference.runner import ReferenceRunner

    target = load_causal_lm(model_path)
    drafter = make_proposer(arm, target, model_path)
    runner = ReferenceRunner(target, eos_token_ids=workload.eos_token_ids)
    for first in range(0, len(workload.prompts), args.concurrency):
        batch = workload.prompts[first : first + args.concurrency]
        bind_requests(drafter, f"remember-{first}", batch, workload.tools[first : first + args.concurrency])
        runner.generate(batch, args.max_tokens, proposer=drafter)  # answers join the memory as batches finish
    drafter.save(str(out))
