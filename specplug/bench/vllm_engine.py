"""vLLM engine for `specplug bench`: one engine subprocess per arm, identical engine settings in every arm.

`run_worker` is the bench's one vLLM subprocess runner (`run` and `smc-ab` arms alike): a job file in, a result
file out, a progress bar, a timeout and the log's tail on failure.

On vLLM every arm runs on the V1 model runner with synchronous scheduling — the runner the plugin arms
(`custom_class`) are forced onto — so a comparison measures the method, not the runner.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from specplug.bench.arms import Arm, csd_settings, proposer_arm, smc_settings, toolspec_settings
from specplug.bench.measure import ArmJob, ArmRun, RequestRecord

# VLLM_ALLOW_INSECURE_SERIALIZATION lets the worker ask every arm's engine for specplug's counters through
# `collective_rpc` with a function (it only changes how control messages are serialized, the same in every arm).
ENGINE_ENV = {
    "VLLM_USE_V2_MODEL_RUNNER": "0",
    "VLLM_CPU_KVCACHE_SPACE": "4",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",
}


def engine_args(max_concurrency: int, max_model_len: int) -> dict:
    """The settings every arm shares (recorded in results.json)."""
    return {
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": max_model_len,
        "max_num_seqs": max_concurrency,
        "seed": 0,
        "async_scheduling": False,
        "disable_log_stats": False,
        "enable_prefix_caching": False,
    }


def speculative_config(arm: Arm) -> dict | None:
    arm = proposer_arm(arm)
    o = arm.options
    if arm.kind == "ar":
        return None
    if arm.kind == "ngram":
        return {
            "method": "ngram",
            "num_speculative_tokens": o["k"],
            "prompt_lookup_min": o["min"],
            "prompt_lookup_max": o["max"],
        }
    if arm.kind == "draft_model":
        from specplug.assets import resolve_model

        draft = resolve_model(o["model"])
        if o.get("layers") is not None:
            from specplug.reference.models import early_exit_checkpoint

            draft = early_exit_checkpoint(draft, int(o["layers"]))
        spec = {"method": "draft_model", "model": str(draft), "num_speculative_tokens": o["k"]}
        if o.get("sample", "greedy") != "greedy":
            spec["draft_sample_method"] = o["sample"]
        return spec
    if arm.kind == "toolspec":
        return {"model": "specplug.ToolSpec", "num_speculative_tokens": o["k"]}  # vLLM's custom_class proposer
    if arm.kind == "suffix":
        return {
            "method": "suffix",
            "num_speculative_tokens": o["k"],
            "suffix_decoding_max_tree_depth": o["depth"],
            "suffix_decoding_max_spec_factor": float(o["factor"]),
            "suffix_decoding_min_token_prob": float(o["prob"]),
        }
    if arm.kind == "spec":
        rest = {("num_speculative_tokens" if k == "k" else k): v for k, v in o.items()}
        return rest
    raise ValueError(f"vLLM has no arm kind {arm.kind}")


def additional_config(arm: Arm) -> dict | None:
    """specplug's own settings for the arm, passed the way a vLLM user passes them (`--additional-config`)."""
    if arm.kind == "csd":
        return {"specplug": {"method": "csd", **csd_settings(arm)}}
    if arm.kind == "toolspec":
        settings = {k: v for k, v in toolspec_settings(arm).items() if k != "num_speculative_tokens"}
        return {"specplug": {"method": "toolspec", **settings}}
    if arm.kind == "smc":
        return {"specplug": {"method": "smc", **smc_settings(arm)}}
    return None


def method_engine_args(arm: Arm) -> dict:
    """Engine arguments a method itself needs beyond the speculative and additional configs (SMC-SD: its
    group-aware scheduler, `--scheduler-cls`)."""
    if arm.kind == "smc":
        from specplug.plugins.vllm_smc.smc_settings import SCHEDULER_CLS

        return {"scheduler_cls": SCHEDULER_CLS}
    return {}


def run_worker(job: dict[str, Any], label: str, timeout_s: float, total: int | None = None) -> dict[str, Any]:
    """Run one vLLM engine process (`python -m specplug.bench.vllm_worker`) on `job` and return its result.

    The job names the model, the engine arguments, the environment (`env`) and the worker's loop (`loop`, see
    vllm_worker.LOOPS). Finished requests are shown as a progress bar out of `total` (warm-up included); past
    `timeout_s` the process is killed. A failed worker raises with the tail of its log.
    """
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="specplug-vllm-") as tmp:
        job_path, result, progress, log = (Path(tmp) / n for n in ("job.json", "result.json", "progress", "worker.log"))
        job_path.write_text(json.dumps({**job, "progress": str(progress)}))
        command = [sys.executable, "-m", "specplug.bench.vllm_worker", str(job_path), str(result)]
        bar = tqdm(total=total, desc=f"  {label}", unit="req", file=sys.stderr, leave=False, disable=total is None)
        with log.open("w") as out, bar:
            proc = subprocess.Popen(command, stdout=out, stderr=out, env={**os.environ, **job["env"]})
            began = time.monotonic()
            while proc.poll() is None:
                if time.monotonic() - began > timeout_s:
                    proc.kill()
                    proc.wait()
                    raise TimeoutError(f"{label} ran past its timeout ({timeout_s:.0f} s)")
                done = progress.stat().st_size if progress.exists() else 0  # one byte per finished request
                bar.update(min(done, total or done) - bar.n)
                time.sleep(0.5)
        if proc.returncode != 0 or not result.exists():
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
            raise RuntimeError(f"vLLM worker for {label} exited with {proc.returncode}:\n{tail}")
        return json.loads(result.read_text())


def suite_engine_args(max_num_seqs: int, max_model_len: int) -> dict:
    """The settings every arm of a suite shares: what a multi-turn server runs (prefix caching on), and what
    SMC-SD's forks need (blocks of 32, a whole group in one step), in every arm alike."""
    return {
        **engine_args(max_num_seqs, max_model_len),
        "enable_prefix_caching": True,
        "block_size": 32,
        "max_num_batched_tokens": 4096,
    }


def run_arm(job: ArmJob) -> list[ArmRun]:
    """Run one arm in its own engine process (a suite: on every workload of the job, one engine)."""
    arm = job.arm
    if job.passes:
        passes = job.passes
        args = dict(job.engine_settings or {})
    else:
        from specplug.bench.measure import Pass

        passes = [Pass("", job.workload, job.max_tokens, job.concurrencies, job.temperature, constraint=job.constraint)]
        longest = max(len(p) for p in job.workload.prompts + job.workload.warmup)
        args = engine_args(max(job.concurrencies), max_model_len=longest + job.max_tokens + 16)
    spec = speculative_config(arm)
    if spec is not None:
        args["speculative_config"] = spec
    if (extra := additional_config(arm)) is not None:
        args["additional_config"] = extra
    args.update(method_engine_args(arm))
    if arm.kind == "smc" and not job.passes:
        args.update(enable_prefix_caching=True, max_num_seqs=max(job.concurrencies) * arm.options["n"])
    workloads = [
        {
            "name": p.name or None,
            "prompts": p.workload.prompts,
            "warmup": p.workload.warmup,
            "tools": p.workload.tools if p.temperature == 0 else None,
            "warmup_tools": p.workload.warmup_tools if p.temperature == 0 else None,
            "max_tokens": p.max_tokens,
            "concurrencies": p.concurrencies,
            "temperature": p.temperature,
            "constraint": p.constraint,
        }
        for p in passes
    ]
    worker_job = {
        "loop": "bench",
        "label": arm.label,
        "model": str(job.model_path),
        "engine_args": args,
        "env": {**ENGINE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},  # the loop counts engine steps
        "workloads": workloads,
        "save_memory": str(job.save_memory) if job.save_memory else None,
    }
    total = sum(len(p.workload.warmup) + len(p.workload.prompts) * len(p.concurrencies) for p in passes)
    data = run_worker(worker_job, f"arm {arm.label}", job.timeout_s, total)
    runs = []
    for r in data["runs"]:
        records = [RequestRecord(**req) for req in r["requests"]]
        specplug = r["specplug"] or {}
        runs.append(
            ArmRun(
                arm.label,
                r["concurrency"],
                records,
                r["wall_s"],
                r["num_drafts"],
                r["num_draft_tokens"],
                r["num_accepted_tokens"],
                accepted_lengths(r["num_drafts"], r.get("accepted_per_pos", [])),
                num_rescued=specplug.get("stats", {}).get("rescued") if arm.verifies else None,
                drafted_by_source=specplug.get("drafted"),
                workload=r.get("workload"),
                startup_s=data.get("startup_s"),
                drafting_ms_per_step=r.get("drafting_ms_per_step"),
            )
        )
    return runs


def accepted_lengths(num_drafts: int, accepted_per_pos: list[int]) -> list[int]:
    """Accepted tokens of every draft, rebuilt from vLLM's per-position counters.

    vLLM accepts a prefix of each draft, so `accepted_per_pos[i]` is the number of drafts that accepted at least
    i+1 tokens; the drafts that accepted exactly j are the difference of neighbours. Sorted, not in time order.
    """
    at_least = [num_drafts, *accepted_per_pos, 0]
    out: list[int] = []
    for j in range(len(at_least) - 1):
        out.extend([j] * max(0, at_least[j] - at_least[j + 1]))
    return out
