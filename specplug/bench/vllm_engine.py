"""vLLM engine for `specplug bench`: one engine subprocess per arm, identical engine settings in every arm.

On vLLM every arm runs on the V1 model runner with synchronous scheduling — the runner the plugin arms
(`custom_class`) are forced onto — so a comparison measures the method, not the runner.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from specplug.bench.arms import Arm, csd_settings, proposer_arm, toolspec_settings
from specplug.bench.measure import ArmRun, RequestRecord
from specplug.bench.workload import Workload

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


def _run_worker(label: str, job: Path, result: Path, progress: Path, log: Path, total: int, timeout_s: float) -> int:
    """Run one arm's engine process; show its finished requests (warm-up included) as a progress bar."""
    from tqdm import tqdm

    with log.open("w") as out, tqdm(total=total, desc=f"  {label}", unit="req", file=sys.stderr, leave=False) as bar:
        proc = subprocess.Popen(
            [sys.executable, "-m", "specplug.bench.vllm_worker", str(job), str(result)], stdout=out, stderr=out
        )
        began = time.monotonic()
        while proc.poll() is None:
            if time.monotonic() - began > timeout_s:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"arm {label} ran past --arm-timeout ({timeout_s:.0f} s)")
            done = progress.stat().st_size if progress.exists() else 0  # one byte per finished request
            bar.update(min(done, total) - bar.n)
            time.sleep(0.5)
    return proc.returncode


def run_arm(
    arm: Arm,
    model_path: Path,
    workload: Workload,
    concurrencies: list[int],
    max_tokens: int,
    timeout_s: float,
    save_memory: Path | None = None,
) -> list[ArmRun]:
    """Run one arm in its own engine process. `save_memory`: where a CSD or ToolSpec arm's memory is written at
    the end."""
    longest = max(len(p) for p in workload.prompts + workload.warmup)
    args = engine_args(max(concurrencies), max_model_len=longest + max_tokens + 16)
    spec = speculative_config(arm)
    if spec is not None:
        args["speculative_config"] = spec
    if (extra := additional_config(arm)) is not None:
        args["additional_config"] = extra
    with tempfile.TemporaryDirectory(prefix="specplug-bench-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        progress, log = Path(tmp) / "progress", Path(tmp) / "worker.log"
        job.write_text(
            json.dumps(
                {
                    "arm": arm.label,
                    "model": str(model_path),
                    "engine_args": args,
                    "env": ENGINE_ENV,
                    "prompts": workload.prompts,
                    "warmup": workload.warmup,
                    "tools": workload.tools,
                    "warmup_tools": workload.warmup_tools,
                    "max_tokens": max_tokens,
                    "concurrencies": concurrencies,
                    "progress": str(progress),
                    "save_memory": str(save_memory) if save_memory else None,
                }
            )
        )
        total = len(workload.warmup) + len(workload.prompts) * len(concurrencies)
        returncode = _run_worker(arm.label, job, result, progress, log, total, timeout_s)
        if returncode != 0 or not result.exists():
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
            raise RuntimeError(f"vLLM worker for arm {arm.label} exited with {returncode}:\n{tail}")
        data = json.loads(result.read_text())
    runs = []
    for r in data["runs"]:
        records = [RequestRecord(**req) for req in r["requests"]]
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
                num_rescued=r.get("num_rescued"),
                drafted_by_source=r.get("drafted_by_source"),
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
