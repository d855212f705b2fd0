"""The method groups of `specplug`: `smc`, `csd` and `toolspec` (room for more, e.g. `draft`).

Every method group has `settings` (the method's engine-neutral settings and their defaults, as JSON).
The methods that learn a memory build one offline with one verb each, on one skeleton (`build_memory`): serve a
prompt slice on an engine — vLLM (the real engine, through the same worker as `specplug bench run`) or the
reference runner — with the method's arm, and write the memory the arm learned to a file. The digests of the
prompts go into the file, so `specplug bench run` refuses to measure an arm whose memory has seen its prompts;
`--skip` picks a slice disjoint from the bench's first prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from specplug.cli import add_verb

# Method -> "module:class" of its engine-neutral settings.
METHOD_SETTINGS = {
    "smc": "specplug.core.smc.config:SMCConfig",
    "csd": "specplug.core.csd.config:CSDConfig",
    "toolspec": "specplug.core.toolspec.config:ToolSpecConfig",
}
CALIBRATE = """`specplug csd calibrate`: offline calibration of CSD's correction memory.

It runs *standard* greedy speculative decoding (CSD with λ = ∞: nothing is rescued, every rejection is counted)
over a prompt slice (measured and warm-up prompts) and writes the memory file with the digests of those prompts.
"""
REMEMBER = """`specplug toolspec remember`: build a warm ToolSpec retrieval memory from a prompt slice.

It serves the slice with ToolSpec (cold) and writes the answers, per tenant "bench" (the tenant `specplug bench
run` uses), to a memory file with the digests of the prompts (warm-up answers are forgotten, as in a bench pass).
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from specplug.bench.workload import add_memory_slice_arguments

    groups = {
        "smc": "SMC-SD tools (sequential Monte Carlo speculative decoding)",
        "csd": "CSD tools (calibrated speculative decoding)",
        "toolspec": "ToolSpec tools (schema-aware, retrieval-based drafting)",
    }
    verbs = {}
    for method, summary in groups.items():
        verbs[method] = sub.add_parser(method, help=summary).add_subparsers(dest="verb", metavar="VERB", required=True)
        add_verb(
            verbs[method],
            "settings",
            f"{method}'s engine-neutral settings and their defaults (JSON)",
            _no_arguments,
            settings,
        )

    def calibrate_arguments(p: argparse.ArgumentParser) -> None:
        add_memory_slice_arguments(p, dataset="mtbench", num_prompts=32, skip=32)
        p.add_argument(
            "--proposer",
            default="ngram",
            help="the drafter, as a csd arm's proposer settings: ngram[:k=6:min=2:max=4], "
            "suffix[:k=24:depth=24:factor=1.0:prob=0.1] (vLLM's suffix decoding) or draft_model:model=M[:layers=N]",
        )
        p.add_argument("--namespace", default="default", help="memory namespace (e.g. one per target/draft pair)")
        p.add_argument(
            "--min-agreement",
            type=float,
            help="a quality budget: after counting, serve the first --sweep-prompts calibration prompts with ar and "
            "with CSD at each (λ, τ) of --lambdas × --tau, record the whole curve and choose the point whose "
            "agreement with ar (functional agreement on the task's tests, else identical outputs) is at least this "
            "(0..1) with the highest acceptance; serving with lam: auto (or a csd arm with lam=auto) uses it, and "
            "min_agreement there picks another budget from the same curve",
        )
        from specplug.bench.csd_budget import LAMBDA_GRID, TAU_GRID

        p.add_argument("--lambdas", default=",".join(map(str, LAMBDA_GRID)), help="the λ grid of the budget sweep")
        p.add_argument(
            "--tau",
            default=",".join(map(str, TAU_GRID)),
            help="the τ grid of the budget sweep (comma-separated, each in (0, 1])",
        )
        p.add_argument("--sweep-prompts", type=int, default=16, help="calibration prompts the budget sweep serves")

    def remember_arguments(p: argparse.ArgumentParser) -> None:
        add_memory_slice_arguments(p, dataset="bfcl:single_turn", num_prompts=64, skip=66)
        p.add_argument("--arm", default="toolspec", help="the ToolSpec settings, as a bench arm (toolspec:k=8:…)")

    add_verb(
        verbs["csd"],
        "calibrate",
        "count the (draft, target) rejection pairs of standard SD on a prompt set into a memory file "
        "(with --min-agreement: and choose λ, τ for a quality budget)",
        calibrate_arguments,
        calibrate,
        CALIBRATE,
    )
    add_verb(
        verbs["toolspec"],
        "remember",
        "serve a prompt slice with ToolSpec and save its answers as a retrieval memory file",
        remember_arguments,
        remember,
        REMEMBER,
    )


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def settings(args: argparse.Namespace) -> int:
    """`specplug <method> settings`: the method's engine-neutral settings with their defaults, as JSON (engine
    adapters document what they take in their own flags: docs/<method>/)."""
    module, name = METHOD_SETTINGS[args.command].split(":")
    config_class = getattr(__import__(module, fromlist=[name]), name)
    print(json.dumps({"method": args.command, "defaults": asdict(config_class())}, indent=2))
    return 0


def calibrate(args: argparse.Namespace) -> int:
    from specplug.bench.config import integers
    from specplug.core.errors import ConfigError

    if args.min_agreement is not None:
        if not 0 <= args.min_agreement <= 1:
            raise ConfigError("min-agreement", args.min_agreement, "a fraction in [0, 1]")
        if args.engine != "vllm":
            raise ConfigError("engine", args.engine, "vllm for a --min-agreement sweep")
        args.lambda_grid = tuple(integers("lambdas", args.lambdas))
        try:
            args.tau_grid = tuple(float(t) for t in str(args.tau).split(","))
        except ValueError:
            raise ConfigError("tau", args.tau, "comma-separated probability ratios in (0, 1]") from None
        if not args.tau_grid or not all(0 < t <= 1 for t in args.tau_grid):
            raise ConfigError("tau", args.tau, "comma-separated probability ratios in (0, 1]")
        if not 1 <= args.sweep_prompts <= args.num_prompts:
            raise ConfigError("sweep-prompts", args.sweep_prompts, f"1..{args.num_prompts} (--num-prompts)")
    return build_memory(args, "csd calibrate", _calibration_arm(args), _record_calibration)


def _calibration_arm(args: argparse.Namespace) -> Any:
    """Standard SD over the calibration drafter: CSD with λ = ∞ counts every rejection and rescues nothing."""
    from specplug.bench.arms import parse_arm

    kind, _, rest = args.proposer.partition(":")
    arm = f"csd:proposer={kind}:lam=inf:namespace={args.namespace}:tenants=shared"  # the calibrated memory learns
    return parse_arm(arm + (f":{rest}" if rest else ""))


def calibrated_pair(model_path: Path, arm: Any) -> dict[str, str]:
    """The (target, draft, tokenizer) identity a calibration counts for, as vLLM's front end computes it when it
    serves the memory (`plugins.vllm_smc.settings.engine_pair`): same config fields, same vocabulary."""
    from specplug.bench.vllm_engine import speculative_config
    from specplug.core.model_identity import model_config_dict, pair_identity, tokenizer_vocab

    spec = speculative_config(arm) or {"method": "none"}
    draft = model_config_dict(spec["model"]) if spec["method"] == "draft_model" else None
    return pair_identity(model_config_dict(model_path), tokenizer_vocab(model_path), spec["method"], draft)


def _record_calibration(bank: Any, args: argparse.Namespace, workload: Any) -> str:
    """The calibration prompts, settings and (target, draft, tokenizer) pair go into the file; the summary line
    names what was counted."""
    from specplug.assets import resolve_model
    from specplug.core.csd.budget import CALIBRATED_KEY, CONFIDENCE
    from specplug.core.csd.config import PAIR_KEY

    bank.record_calibration(workload.prompts + workload.warmup)
    keys = ("engine", "model", "dataset", "skip", "num_prompts", "proposer", "max_tokens")
    bank.metadata.update({"kind": "calibration", **{key: getattr(args, key) for key in keys}})
    bank.metadata[PAIR_KEY] = calibrated_pair(resolve_model(args.model), _calibration_arm(args))  # as memory_slice
    bank.save(args.out)
    summary = bank.summary().get(args.namespace, {})
    line = (
        f"{summary.get('pairs', 0)} pairs from {summary.get('observations', 0)} rejections; "
        f"top pairs {bank.memory(args.namespace).top(5)}"
    )
    if args.min_agreement is None:
        return line
    from specplug.bench import csd_budget
    from specplug.bench.workload import build_workload

    model_path = Path(workload.tokenizer_path)
    sweep_slice = build_workload(model_path, args.dataset, args.sweep_prompts, skip=args.skip)
    curve = csd_budget.sweep(
        model_path,
        sweep_slice,
        args.proposer,
        args.out,
        args.namespace,
        args.tau_grid,
        args.lambda_grid,
        args.concurrency,
        args.max_tokens,
        args.arm_timeout,
    )
    chosen = csd_budget.choose(curve, args.min_agreement)
    bank.metadata[CALIBRATED_KEY] = {
        "min_agreement": args.min_agreement,
        "lam": chosen["lam"],
        "tau": chosen["tau"],
        "agreement": chosen["agreement"],
        "measure": chosen["measure"],
        "sweep_prompts": args.sweep_prompts,
        "confidence": CONFIDENCE,
        "concurrency": args.concurrency,
        "curve": curve,
    }
    bank.save(args.out)
    return (
        f"{line}; budget {args.min_agreement:.2f}: λ={chosen['lam']}, τ={chosen['tau']} ({chosen['measure']} "
        f"{chosen['agreement']:.3f} on {args.sweep_prompts} calibration prompts, assured at "
        f"{CONFIDENCE:.0%} confidence) — serve with lam: auto"
    )


def remember(args: argparse.Namespace) -> int:
    from specplug.bench.arms import parse_arm
    from specplug.core.errors import ConfigError

    arm = parse_arm(args.arm)
    if arm.kind != "toolspec" or arm.options["memory"]:
        raise ConfigError("arm", args.arm, "a toolspec arm without memory= (the memory starts cold)")
    return build_memory(args, "toolspec remember", arm, _remembered)


def _remembered(bank: Any, args: argparse.Namespace, workload: Any) -> str:
    del args, workload
    summary = bank.summary()
    return f"{summary['answers']} answers, {summary['tokens']} tokens"


def build_memory(args: argparse.Namespace, command: str, arm: Any, finish: Callable[..., str]) -> int:
    """Serve the prompt slice of `args` with `arm` on `args.engine`, save the memory the arm learned to `args.out`,
    then `finish(bank, args, workload)` (the file reloaded as the method's plugin loads it) names what it holds."""
    from specplug.bench import reference_engine, vllm_engine
    from specplug.bench.measure import ArmJob
    from specplug.bench.workload import memory_slice
    from specplug.core.plugin_manager import get_plugin_manager

    model_path, workload = memory_slice(
        args.model, args.dataset, args.num_prompts, args.skip, args.concurrency, args.max_tokens
    )
    out = Path(args.out)
    began = time.perf_counter()
    tag = f"[specplug {command}]"
    print(
        f"{tag} serving {len(workload.prompts)} prompts of {args.dataset} (after {args.skip}) with {arm.label} "
        f"on {args.engine} ...",
        file=sys.stderr,
    )
    engine = vllm_engine if args.engine == "vllm" else reference_engine
    engine.run_arm(ArmJob(arm, model_path, workload, [args.concurrency], args.max_tokens, args.arm_timeout, out))
    bank = get_plugin_manager().make_memory(arm.kind, {"memory_path": str(out)})
    summary = finish(bank, args, workload)
    print(f"{tag} wrote {out}: {summary} in {time.perf_counter() - began:.0f}s", file=sys.stderr)
    return 0
