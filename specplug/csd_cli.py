"""`specplug csd calibrate`: offline calibration of CSD's correction memory.

It runs *standard* greedy speculative decoding (CSD with λ = ∞: nothing is rescued, every rejection is counted)
over a prompt slice on an engine — vLLM (the real engine, through the same worker as `specplug bench`) or the
reference runner — and writes the memory file. The digests of the calibration prompts (measured and warm-up)
go into the file, so `specplug bench` refuses to measure a CSD arm on prompts its memory has seen; `--skip`
picks a slice disjoint from the bench's first prompts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from specplug.core.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from specplug.bench.workload import add_memory_slice_arguments

    csd = sub.add_parser("csd", help="CSD tools (calibrated speculative decoding)")
    csd_sub = csd.add_subparsers(dest="csd_command", metavar="CSD_COMMAND", required=True)
    p = csd_sub.add_parser(
        "calibrate",
        help="count the (draft, target) rejection pairs of standard SD on a prompt set into a memory file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_memory_slice_arguments(p, dataset="mtbench", num_prompts=32, skip=32)
    p.add_argument(
        "--proposer",
        default="ngram",
        help="the drafter, as a csd arm's proposer settings: ngram[:k=6:min=2:max=4] or draft_model:model=M[:layers=N]",
    )
    p.add_argument("--namespace", default="default", help="memory namespace (e.g. one per target/draft pair)")

    o = csd_sub.add_parser(
        "overhead",
        help="per-step verification time: vLLM's rejection sampler vs CSD's, same inputs (needs vLLM)",
    )
    o.add_argument("--batch", type=int, default=64)
    o.add_argument("--gamma", type=int, default=6)
    o.add_argument("--vocab", type=int, default=49152)
    o.add_argument("--pairs", type=int, default=100_000, help="pairs in the correction memory")
    o.add_argument("--repeats", type=int, default=20)


def _calibration_arm(proposer: str):
    from specplug.bench.arms import parse_arm

    kind, _, rest = proposer.partition(":")
    return parse_arm(f"csd:proposer={kind}:lam=inf" + (f":{rest}" if rest else ""))


def run(args: argparse.Namespace) -> int:
    if args.csd_command == "overhead":
        import json

        from specplug.csd_overhead import measure

        print(json.dumps(measure(args.batch, args.gamma, args.vocab, args.pairs, args.repeats), indent=2))
        return 0
    try:
        arm = _calibration_arm(args.proposer)
        from specplug.bench.workload import memory_slice

        model_path, workload = memory_slice(
            args.model, args.dataset, args.num_prompts, args.skip, args.concurrency, args.max_tokens
        )
    except ConfigError as exc:
        print(f"specplug csd calibrate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    began = time.perf_counter()
    print(
        f"[specplug csd] calibrating on {len(workload.prompts)} prompts of {args.dataset} (after {args.skip}) "
        f"with {arm.options['proposer']} drafts on {args.engine} ...",
        file=sys.stderr,
    )
    if args.engine == "vllm":
        bank = _calibrate_vllm(arm, model_path, workload, args, out)
    else:
        bank = _calibrate_reference(arm, model_path, workload, args)
    bank.record_calibration(workload.prompts + workload.warmup)
    bank.metadata.update(
        {
            "kind": "calibration",
            "engine": args.engine,
            "model": args.model,
            "dataset": args.dataset,
            "skip": args.skip,
            "num_prompts": args.num_prompts,
            "proposer": args.proposer,
            "max_tokens": args.max_tokens,
        }
    )
    bank.save(out)
    summary = bank.summary().get(args.namespace, {})
    print(
        f"[specplug csd] wrote {out}: {summary.get('pairs', 0)} pairs from {summary.get('observations', 0)} "
        f"rejections in {time.perf_counter() - began:.0f}s; top pairs {bank.memory(args.namespace).top(5)}",
        file=sys.stderr,
    )
    return 0


def _calibrate_vllm(arm, model_path, workload, args, out: Path):
    """One vLLM engine with CSD at λ=∞ (standard SD that counts rejections); its worker saves the memory."""
    from specplug.bench import vllm_engine
    from specplug.core.csd.bank import CorrectionMemoryBank

    if args.namespace != "default":
        raise ConfigError("namespace", args.namespace, "default on vLLM calibration (rename with the file API)")
    vllm_engine.run_arm(
        arm, model_path, workload, [args.concurrency], args.max_tokens, args.arm_timeout, save_memory=out
    )
    return CorrectionMemoryBank.load(out)


def _calibrate_reference(arm, model_path, workload, args):
    from specplug.bench.arms import proposer_arm
    from specplug.bench.reference_engine import make_proposer
    from specplug.core.csd.bank import CorrectionMemoryBank
    from specplug.core.csd.config import CSDConfig
    from specplug.core.csd.verifier import CalibratedChainVerifier
    from specplug.reference.models import load_causal_lm
    from specplug.reference.runner import ReferenceRunner

    target = load_causal_lm(model_path)
    bank = CorrectionMemoryBank()
    verifier = CalibratedChainVerifier(bank.memory(args.namespace), CSDConfig.from_mapping({"lam": "inf"}))
    proposer = make_proposer(proposer_arm(arm), target, model_path)
    runner = ReferenceRunner(target, eos_token_ids=workload.eos_token_ids)
    prompts = workload.prompts + workload.warmup
    for first in range(0, len(prompts), args.concurrency):
        runner.generate(
            prompts[first : first + args.concurrency], args.max_tokens, proposer=proposer, verifier=verifier
        )
    return bank
