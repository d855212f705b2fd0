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

from specplug.bench.arms import Arm, csd_settings, proposer_arm, toolspec_settings
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
        return {"method": "draft_model", "model": str(draft), "num_speculative_tokens": o["k"]}
    if arm.kind == "toolspec":
        return {"model": "specplug.ToolSpec", "num_speculative_tokens": o["k"]}  # vLLM's custom_class proposer
    raise ValueError(f"vLLM has no arm kind {arm.kind}")


def additional_config(arm: Arm) -> dict | None:
    """specplug's own settings for the arm, passed the way a vLLM user passes them (`--additional-config`)."""
    if arm.kind == "csd":
        return {"specplug": {"method": "csd", **csd_settings(arm)}}
    if arm.kind == "toolspec":
        settings = {k: v for k, v in toolspec_settings(arm).items() if k != "num_speculative_tokens"}
        return {"specplug": {"method": "toolspec", **settings}}
    return None


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


def run_arm(job: ArmJob) -> list[ArmRun]:
    """Run one arm in its own engine process."""
    arm, workload = job.arm, job.workload
    longest = max(len(p) for p in workload.prompts + workload.warmup)
    args = engine_args(max(job.concurrencies), max_model_len=longest + job.max_tokens + 16)
    spec = speculative_config(arm)
    if spec is not None:
        args["speculative_config"] = spec
    if (extra := additional_config(arm)) is not None:
        args["additional_config"] = extra
    worker_job = {
        "loop": "bench",
        "label": arm.label,
        "model": str(job.model_path),
        "engine_args": args,
        "env": ENGINE_ENV,
        "prompts": workload.prompts,
        "warmup": workload.warmup,
        "tools": workload.tools,
        "warmup_tools": workload.warmup_tools,
        "max_tokens": job.max_tokens,
        "concurrencies": job.concurrencies,
        "save_memory": str(job.save_memory) if job.save_memory else None,
    }
    total = len(workload.warmup) + len(workload.prompts) * len(job.concurrencies)
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
