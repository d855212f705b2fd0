"""One vLLM engine process for one arm of `specplug bench` (run as `python -m specplug.bench.vllm_worker`).

The parent starts one of these per arm, so each arm gets a fresh engine and the memory of the previous arm is
returned to the OS before the next starts. Requests are fed through `LLMEngine.add_request` / `step()` with at
most `concurrency` in flight, the same loop for every arm; timings are taken here, on the client side, the
same way for every arm.
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
) -> tuple[list[dict], float]:
    from vllm import SamplingParams

    def params(index: int) -> SamplingParams:
        # Every arm gets the same parameters; a request's tools ride in extra_args (only ToolSpec reads them).
        request_tools = tools[index] if tools else None
        extra = {"toolspec": {"tools": request_tools, "tenant": "bench"}} if request_tools else None
        return SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0, extra_args=extra)

    engine = llm.llm_engine
    pending = list(enumerate(prompts))
    submitted: dict[str, dict] = {}
    done: list[dict] = []
    start = time.perf_counter()
    while pending or engine.has_unfinished_requests():
        while pending and len(submitted) < concurrency:
            index, ids = pending.pop(0)
            rid = f"bench-{index}"
            engine.add_request(rid, {"prompt_token_ids": ids}, params(index))
            submitted[rid] = {"index": index, "t0": time.perf_counter(), "ttft": None, "forwards": 0, "seen": 0}
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
                if progress is not None:  # the parent shows a progress bar from this file's size
                    with progress.open("ab") as f:
                        f.write(b".")
                done.append(
                    {
                        "index": state["index"],
                        "output_token_ids": list(out.outputs[0].token_ids),
                        "ttft_s": state["ttft"] or (now - state["t0"]),
                        "e2e_s": now - state["t0"],
                        "forwards": state["forwards"],
                    }
                )
    return sorted(done, key=lambda r: r["index"]), time.perf_counter() - start


def _method(job: dict) -> str | None:
    return ((job["engine_args"].get("additional_config") or {}).get("specplug") or {}).get("method")


def _specplug_report(llm, method: str | None, action: str = "report", path: str | None = None) -> dict | None:
    """The counters of the arm's specplug method from the engine's workers (None for other arms)."""
    if method == "csd":
        from specplug.plugins.vllm_smc.csd_sampler import csd_rpc as rpc
    elif method == "toolspec":
        from specplug.plugins.vllm_smc.toolspec_proposer import toolspec_rpc as rpc
    else:
        return None
    args = (action, path) if path else (action,)
    return next((r for r in llm.collective_rpc(rpc, args=args) if r is not None), None)


def _method_counters(report: dict | None, method: str | None) -> dict:
    if method == "csd":
        return {"rescued": report["stats"]["rescued"]}
    if method == "toolspec":
        return dict(report["drafted"])
    return {}


def main(job_path: str, result_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    os.environ.update(job["env"])
    from vllm import LLM

    llm = LLM(model=job["model"], **job["engine_args"])
    progress = Path(job["progress"]) if job.get("progress") else None
    conc_max = max(job["concurrencies"])
    warm = min(job["max_tokens"], 16)
    _run(llm, job["warmup"], warm, conc_max, progress, job.get("warmup_tools"))  # warm-up, not measured
    method = _method(job)
    if method and _specplug_report(llm, method) is None:
        raise RuntimeError(f"{method} was requested but the engine does not run it: specplug's vLLM bootstrap did not")
    runs = []
    for conc in job["concurrencies"]:
        if method == "toolspec":  # every pass starts from the arm's own memory: neither the warm-up's answers nor
            _specplug_report(llm, method, "reset")  # an earlier pass's answers to these very prompts
        before = _counters(llm)
        method_before = _method_counters(_specplug_report(llm, method), method)
        requests, wall = _run(llm, job["prompts"], job["max_tokens"], conc, progress, job.get("tools"))
        after = _counters(llm)
        deltas = {k: int(after[k] - before[k]) for k in after if k != "accepted_per_pos"}
        deltas["accepted_per_pos"] = _combine(after["accepted_per_pos"], before["accepted_per_pos"], -1)
        method_after = _method_counters(_specplug_report(llm, method), method)
        change = {k: v - method_before.get(k, 0) for k, v in method_after.items()}
        deltas["num_rescued"] = change["rescued"] if method == "csd" else None
        deltas["drafted_by_source"] = change if method == "toolspec" else None
        runs.append({"concurrency": conc, "requests": requests, "wall_s": wall, **deltas})
        print(
            f"[specplug bench] {job['arm']} c={conc}: {sum(len(r['output_token_ids']) for r in requests)} tokens "
            f"in {wall:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    if job.get("save_memory"):
        saved = _specplug_report(llm, method, "save", job["save_memory"])
        if not saved or not saved["saved"]:
            raise RuntimeError(f"could not save the {method} memory to {job['save_memory']}")
    Path(result_path).write_text(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
