"""One vLLM engine process for one arm (run as `python -m specplug.bench.vllm_worker JOB RESULT` by
`vllm_engine.run_worker`, the bench's one vLLM subprocess runner).

The parent starts one of these per arm, so each arm gets a fresh engine and the memory of the previous arm is
returned to the OS before the next starts. The job names the loop: `bench` (`specplug bench run`: requests fed
through `LLMEngine.add_request` / `step()` with at most `concurrency` in flight, the same loop for every arm,
timings taken here on the client side) or `sampled` (`specplug bench smc-ab`: every prompt at once, sampled).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _counters(llm) -> dict[str, float | list[int]]:
    """Spec-decode counters from vLLM's metrics reader (names with or without the _total suffix).

    `accepted_per_pos[i]` counts drafts whose first i+1 tokens were accepted (vLLM accepts a prefix), which is
    what the accepted-length histogram is rebuilt from.
    """
    wanted = {
        "vllm:spec_decode_num_drafts": "num_drafts",
        "vllm:spec_decode_num_draft_tokens": "num_draft_tokens",
        "vllm:spec_decode_num_accepted_tokens": "num_accepted_tokens",
    }
    found: dict[str, float | list[int]] = dict.fromkeys(wanted.values(), 0.0)
    per_pos: list[int] = []
    for metric in llm.get_metrics():
        name = metric.name.removesuffix("_total")
        if name == "vllm:spec_decode_num_accepted_tokens_per_pos" and hasattr(metric, "values"):
            per_pos = _combine(per_pos, [int(v) for v in metric.values], 1)
            continue
        key = wanted.get(name)
        if key is not None and hasattr(metric, "value"):
            found[key] += float(metric.value)
    found["accepted_per_pos"] = per_pos
    return found


def _combine(a: list[int], b: list[int], sign: int) -> list[int]:
    """a + sign * b elementwise, the shorter list padded with zeros (engines may report different lengths)."""
    n = max(len(a), len(b))
    a, b = a + [0] * (n - len(a)), b + [0] * (n - len(b))
    return [x + sign * y for x, y in zip(a, b, strict=True)]


def _run(
    llm,
    prompts: list[list[int]],
    max_tokens: int,
    concurrency: int,
    progress: Path | None = None,
    tools: list | None = None,
    temperature: float = 0.0,
    tag: str = "bench",
    steps: dict | None = None,
    constraint: str | None = None,
) -> tuple[list[dict], float]:
    """Requests with at most `concurrency` in flight; per-request times taken here, the same for every arm.

    Greedy (`temperature` 0) or sampled with one seed per prompt (the same seeds in every arm). `steps` is the
    engine-step counter of `_count_steps`: a method that returns a request's tokens only when it finishes (SMC-SD)
    is credited with the target forwards that ran while it was in flight. `constraint` ("required" / "named"):
    every request with tools is held to the JSON schema vLLM's OpenAI server would give it (`constraint_schema`).
    """
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    def params(index: int) -> SamplingParams:
        # Every arm gets the same parameters; a request's tools ride in extra_args (only ToolSpec reads them), and
        # every request belongs to the tenant "bench" (named by the operator's own code: the memories learn there).
        request_tools = tools[index] if tools else None
        extra = {"toolspec": {"tools": request_tools, "tenant": "bench"}} if request_tools else None
        extra = extra or {"specplug": {"tenant": "bench"}}
        seed = 0 if temperature == 0 else 1000 + index
        schema = constraint_schema(constraint, request_tools) if constraint and request_tools else None
        structured = StructuredOutputsParams(json=schema) if schema is not None else None
        return SamplingParams(
            temperature=temperature, max_tokens=max_tokens, seed=seed, extra_args=extra, structured_outputs=structured
        )

    engine = llm.llm_engine
    pending = list(enumerate(prompts))
    submitted: dict[str, dict] = {}
    done: list[dict] = []
    count = (lambda: steps["n"]) if steps is not None else (lambda: 0)
    start = time.perf_counter()
    while pending or engine.has_unfinished_requests():
        while pending and len(submitted) < concurrency:
            index, ids = pending.pop(0)
            rid = f"{tag}-{index}"
            engine.add_request(rid, {"prompt_token_ids": ids}, params(index))
            submitted[rid] = {
                "index": index,
                "t0": time.perf_counter(),
                "ttft": None,
                "forwards": 0,
                "seen": 0,
                "step0": count(),
            }
        outputs = engine.step()
        now = time.perf_counter()
        for out in outputs:
            state = submitted.get(out.request_id)
            if state is None:
                continue
            n = len(out.outputs[0].token_ids)
            if n > state["seen"]:
                state["forwards"] += 1
                state["seen"] = n
                if state["ttft"] is None:
                    state["ttft"] = now - state["t0"]
            if out.finished:
                submitted.pop(out.request_id)
                mark_finished(progress)
                forwards = state["forwards"]
                if steps is not None and forwards <= 1 < n:  # tokens delivered at the end: count the steps run
                    forwards = count() - state["step0"]
                done.append(
                    {
                        "index": state["index"],
                        "output_token_ids": list(out.outputs[0].token_ids),
                        "ttft_s": state["ttft"] or (now - state["t0"]),
                        "e2e_s": now - state["t0"],
                        "forwards": forwards,
                    }
                )
    wall = time.perf_counter() - start
    _settle(engine)
    return sorted(done, key=lambda r: r["index"]), wall


def constraint_schema(mode: str, tools: list[dict]) -> dict:
    """The JSON schema vLLM's OpenAI server constrains a chat request with, for `tool_choice` "required" (`mode`
    "required") or a named function (`mode` "named": the request's first tool)."""
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionNamedToolChoiceParam,
        ChatCompletionToolsParam,
    )
    from vllm.tool_parsers.utils import get_json_schema_from_tools

    given = [ChatCompletionToolsParam(**tool) for tool in tools]
    if mode == "named":
        choice = ChatCompletionNamedToolChoiceParam(function={"name": tools[0]["function"]["name"]})
        return get_json_schema_from_tools(choice, given)
    if mode == "required":
        return get_json_schema_from_tools("required", given)
    raise ValueError(f"no tool-call constraint {mode!r}: required or named")


def _settle(engine) -> None:
    """Deliver the pass's last finishes to the worker now. vLLM tells the runner a request finished only in the
    next step's scheduler output, and an offline loop stops as soon as every output is in, so without this the
    last answers would reach the specplug session at the next pass's first step: after its memory reset (a warm-up
    answer would count as learned) or after its save (the last answer would be missing). One empty step (no model
    forward, no counted step) sends them."""
    if not engine.has_unfinished_requests():
        engine.step()


def _count_steps(llm) -> dict | None:
    """Count engine steps that ran the target (the scheduler scheduled tokens), where the engine core runs in this
    process (VLLM_ENABLE_V1_MULTIPROCESSING=0); None otherwise."""
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)
    scheduler = getattr(core, "scheduler", None)
    if scheduler is None:
        return None
    steps = {"n": 0}
    original = scheduler.schedule

    def counting(*a, **k):
        output = original(*a, **k)
        steps["n"] += output.total_num_scheduled_tokens > 0
        return output

    scheduler.schedule = counting
    return steps


def _reset_builtin_drafter(worker) -> bool:
    """Forget what vLLM's `suffix` drafter learned from earlier requests (its global tree of past outputs), so every
    measured pass starts from the same state, as specplug's memories do (`specplug_rpc reset`)."""
    drafter = getattr(getattr(worker, "model_runner", None), "drafter", None)
    cache = getattr(drafter, "suffix_cache", None)
    if cache is None:
        return False
    spec = worker.vllm_config.speculative_config
    drafter.suffix_cache = type(cache)(
        max_tree_depth=spec.suffix_decoding_max_tree_depth,
        max_cached_requests=spec.suffix_decoding_max_cached_requests,
    )
    return True


def _drafting_clock(worker) -> list[float]:
    """Time every drafting call of the worker's runner (`propose_draft_token_ids`: vLLM's drafters and specplug's
    proposer slot alike) on an instance wrapper installed once; returns [calls, seconds] so far. A benchmark
    instrument on this worker only: it changes no decision of the engine."""
    runner = worker.model_runner
    clock = getattr(runner, "specplug_bench_drafting", None)
    if clock is None:
        clock = runner.specplug_bench_drafting = [0.0, 0.0]
        propose = runner.propose_draft_token_ids

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return propose(*args, **kwargs)
            finally:
                clock[0] += 1
                clock[1] += time.perf_counter() - began

        runner.propose_draft_token_ids = timed
    return list(clock)


def _drafting(llm) -> list[float]:
    return [sum(c) for c in zip(*llm.collective_rpc(_drafting_clock), strict=True)]


def mark_finished(progress: Path | None, count: int = 1) -> None:
    """The parent shows a progress bar from this file's size: one byte per finished request."""
    if progress is not None:
        with progress.open("ab") as f:
            f.write(b"." * count)


def _method(job: dict) -> str | None:
    return ((job["engine_args"].get("additional_config") or {}).get("specplug") or {}).get("method")


def _specplug(llm, method: str | None, action: str = "report", path: str | None = None) -> dict | None:
    """The arm's specplug session, through `specplug_rpc` on the engine's workers (None for arms without one)."""
    if method is None:
        return None
    from specplug.plugins.vllm_smc.rpc import specplug_rpc

    args = (action, path) if path else (action,)
    return next((r for r in llm.collective_rpc(specplug_rpc, args=args) if r is not None), None)


def _session_counters(report: dict | None) -> dict[str, dict[str, float]]:
    """The session's step counters and draft tokens per source (proposers that keep them), to be differenced."""
    if report is None:
        return {}
    stats = {k: v for k, v in report.get("stats", {}).items() if isinstance(v, (int, float))}
    return {"stats": stats, **({"drafted": dict(report["drafted"])} if report.get("drafted") is not None else {})}


def _change(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]) -> dict | None:
    if not after:
        return None
    return {part: {k: v - before.get(part, {}).get(k, 0) for k, v in values.items()} for part, values in after.items()}


def _passes(job: dict) -> list[dict]:
    """The job's workloads (`workloads`: the suite shares one engine per arm across workloads), or the one workload
    of a plain `specplug bench run` job."""
    if job.get("workloads"):
        return job["workloads"]
    keys = ("prompts", "warmup", "tools", "warmup_tools", "max_tokens", "concurrencies")
    return [{"name": None, "temperature": 0.0, **{k: job.get(k) for k in keys}}]


def bench_loop(llm, job: dict) -> dict:
    """`specplug bench run`: per workload a warm-up, then one measured pass per concurrency, with vLLM's spec-decode
    counters and the specplug session's counters differenced around each pass."""
    progress = Path(job["progress"]) if job.get("progress") else None
    method = _method(job)
    if method and _specplug(llm, method) is None:
        raise RuntimeError(f"{method} was requested but the engine does not run it: specplug's vLLM bootstrap did not")
    steps = _count_steps(llm)
    runs = []
    for number, work in enumerate(_passes(job)):
        temperature = work.get("temperature", 0.0)
        warm = min(work["max_tokens"], 16)
        conc_max = max(work["concurrencies"])
        tag = f"w{number}"
        constraint = work.get("constraint")
        _run(
            llm,
            work["warmup"],
            warm,
            conc_max,
            progress,
            work.get("warmup_tools"),
            temperature,
            f"{tag}-warm",
            steps,
            constraint,
        )
        for conc in work["concurrencies"]:
            # Every pass starts from the arm's own memory (methods whose proposer remembers answers reset it, and
            # so does vLLM's suffix drafter): neither the warm-up's answers nor an earlier pass's answers count.
            _specplug(llm, method, "reset")
            llm.collective_rpc(_reset_builtin_drafter)
            before, session_before = _counters(llm), _session_counters(_specplug(llm, method))
            drafting_before = _drafting(llm)
            steps_before = steps["n"] if steps else 0
            requests, wall = _run(
                llm,
                work["prompts"],
                work["max_tokens"],
                conc,
                progress,
                work.get("tools"),
                temperature,
                f"{tag}-c{conc}",
                steps,
                constraint,
            )
            after, session_after = _counters(llm), _session_counters(_specplug(llm, method))
            deltas = {k: int(after[k] - before[k]) for k in after if k != "accepted_per_pos"}
            deltas["accepted_per_pos"] = _combine(after["accepted_per_pos"], before["accepted_per_pos"], -1)
            deltas["specplug"] = _change(session_after, session_before)
            deltas["engine_steps"] = (steps["n"] - steps_before) if steps else None
            calls, seconds = (a - b for a, b in zip(_drafting(llm), drafting_before, strict=True))
            deltas["drafting_ms_per_step"] = 1000 * seconds / calls if calls else None
            runs.append(
                {"workload": work.get("name"), "concurrency": conc, "requests": requests, "wall_s": wall, **deltas}
            )
            where = f" {work['name']}" if work.get("name") else ""
            print(
                f"[specplug bench] {job['label']}{where} c={conc}: "
                f"{sum(len(r['output_token_ids']) for r in requests)} tokens in {wall:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    if job.get("save_memory"):
        saved = _specplug(llm, method, "save", job["save_memory"])
        if not saved or not saved["saved"]:
            raise RuntimeError(f"could not save the {method} memory to {job['save_memory']}")
    return {"runs": runs, "startup_s": job.get("startup_s")}


def sampled_loop(llm, job: dict) -> dict:
    """`specplug bench smc-ab`: sampled requests (temperature, one seed per prompt), every prompt submitted at once
    after a warm-up on other prompts; engine steps that ran the target are counted at the scheduler (the engine
    core runs in this process: VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    from vllm import SamplingParams

    progress = Path(job["progress"]) if job.get("progress") else None
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    steps = {"n": 0}
    original = scheduler.schedule

    def counting(*a, **k):
        output = original(*a, **k)
        steps["n"] += output.total_num_scheduled_tokens > 0  # one target forward
        return output

    scheduler.schedule = counting

    def params(seed: int) -> SamplingParams:
        return SamplingParams(temperature=job["temperature"], max_tokens=job["max_tokens"], seed=seed)

    warmup = job["warmup"]
    llm.generate([{"prompt_token_ids": p} for p in warmup], [params(i) for i in range(len(warmup))], use_tqdm=False)
    mark_finished(progress, len(warmup))
    steps["n"] = 0
    prompts = [{"prompt_token_ids": p} for p in job["prompts"]]
    started = time.perf_counter()
    outs = llm.generate(prompts, [params(1000 + i) for i in range(len(prompts))], use_tqdm=False)
    wall = time.perf_counter() - started
    mark_finished(progress, len(prompts))
    result = {"wall_s": wall, "tokens": [list(o.outputs[0].token_ids) for o in outs], "target_forwards": steps["n"]}
    snapshot = getattr(getattr(scheduler, "metrics", None), "snapshot", None)  # SMC-SD's scheduler: resampling, ESS
    if snapshot is not None:
        result["smc"] = snapshot()
    return result


LOOPS = {"bench": bench_loop, "sampled": sampled_loop}


def _loop(name: str):
    """A loop of this module by name, or another tool's as `module:function` (e.g. the draft distiller's teacher)."""
    if ":" not in name:
        return LOOPS[name]
    import importlib

    module, function = name.split(":", 1)
    return getattr(importlib.import_module(module), function)


def main(job_path: str, result_path: str) -> None:
    began = time.perf_counter()
    job = json.loads(Path(job_path).read_text())
    os.environ.update(job["env"])
    from vllm import LLM

    llm = LLM(model=job["model"], **job["engine_args"])
    job["startup_s"] = time.perf_counter() - began  # imports, model load, KV-cache profiling: reported apart
    result = _loop(job["loop"])(llm, job)
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
