"""What an engine is asked to run, the per-request records it returns, and the metrics computed from them the same
way for every arm."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from specplug.bench.arms import Arm
    from specplug.bench.workload import Workload


@dataclass(frozen=True)
class Pass:
    """One workload an engine serves in a suite run: its prompts at each concurrency, greedy or sampled."""

    name: str
    workload: Workload
    max_tokens: int
    concurrencies: list[int]
    temperature: float = 0.0
    constraint: str | None = None  # tool calls under vLLM's structured outputs: "required" or "named"


@dataclass(frozen=True)
class ArmJob:
    """What an engine (`vllm_engine`, `reference_engine`: `run_arm(job) -> list[ArmRun]`) is asked to run: one arm
    on the workload's prompts, once per concurrency level, after its warm-up prompts."""

    arm: Arm
    model_path: Path
    workload: Workload
    concurrencies: list[int]
    max_tokens: int
    timeout_s: float = 3600.0  # the arm fails past it (engines in their own process)
    save_memory: Path | None = None  # where a CSD or ToolSpec arm's memory is written at the end
    passes: list[Pass] | None = None  # a suite: several workloads on one engine (then `workload` is unused)
    engine_settings: dict | None = None  # a suite's shared engine arguments (else the engine's defaults)
    constraint: str | None = None  # tool calls under structured outputs ("required" / "named"), every arm alike
    temperature: float = 0.0  # 0 = greedy; else sampled with one seed per prompt (a suite's passes carry their own)


@dataclass
class RequestRecord:
    index: int  # position in the workload
    output_token_ids: list[int]
    ttft_s: float
    e2e_s: float
    forwards: int  # target forward passes this request took part in (steps in which it received tokens)


@dataclass
class ArmRun:
    """One arm at one concurrency: what the engine produced, plus its speculative counters."""

    arm: str
    concurrency: int
    requests: list[RequestRecord]
    wall_s: float
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_draft: list[int] = field(default_factory=list)  # histogram source, where the engine gives it
    error: str | None = None
    num_rescued: int | None = None  # accepted drafts only CSD's calibrated rule kept (None: not a CSD arm)
    drafted_by_source: dict[str, int] | None = None  # ToolSpec: draft tokens per source (schema, memory, …)
    workload: str | None = None  # the suite workload this run belongs to
    startup_s: float | None = None  # engine start (imports, load, profiling), reported apart from decoding
    drafting_ms_per_step: float | None = None  # wall time of the engine's drafting call per step (None: not timed)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(run: ArmRun, reference: ArmRun | None) -> dict:
    """Metrics with the stable key names of results.json. `reference` is the `ar` arm at the same concurrency."""
    if run.error is not None:
        return {"arm": run.arm, "concurrency": run.concurrency, "error": run.error}
    tokens = sum(len(r.output_token_ids) for r in run.requests)
    tpots = [(r.e2e_s - r.ttft_s) / (len(r.output_token_ids) - 1) for r in run.requests if len(r.output_token_ids) > 1]
    e2e = [r.e2e_s for r in run.requests]
    speculative = run.num_drafts > 0 or run.num_draft_tokens > 0
    out = {
        "arm": run.arm,
        "concurrency": run.concurrency,
        "num_requests": len(run.requests),
        "output_tokens": tokens,
        "wall_s": run.wall_s,
        "output_tokens_per_s": tokens / run.wall_s if run.wall_s > 0 else None,
        "ttft_ms": 1000 * float(np.mean([r.ttft_s for r in run.requests])),
        "tpot_ms": 1000 * float(np.mean(tpots)) if tpots else None,
        "e2e_latency_ms": {f"p{q}": 1000 * _pct(e2e, q) for q in (50, 90, 99)},
        # request time per output token, end to end: comparable across methods that stream and SMC-SD (tokens at end)
        "request_ms_per_token": 1000 * sum(e2e) / tokens if tokens else None,
        "mean_accepted_length": 1 + run.num_accepted_tokens / run.num_drafts if run.num_drafts else 1.0,
        "acceptance_rate": run.num_accepted_tokens / run.num_draft_tokens if speculative else None,
        "target_forwards_per_token": sum(r.forwards for r in run.requests) / tokens if tokens else None,
        "num_drafts": run.num_drafts,
        "num_draft_tokens": run.num_draft_tokens,
        "num_accepted_tokens": run.num_accepted_tokens,
        "num_rescued": run.num_rescued,
        "engine_startup_s": run.startup_s,
        "drafting_ms_per_step": run.drafting_ms_per_step,
        "drafted_by_source": run.drafted_by_source,
        "exact_match": None,
        "accuracy": None,
    }
    if reference is not None and reference.error is None:
        ref = {r.index: r.output_token_ids for r in reference.requests}
        same = [r.output_token_ids == ref.get(r.index) for r in run.requests]
        out["exact_match"] = sum(same) / len(same) if same else None
        out["first_divergence"] = {
            r.index: first_difference(r.output_token_ids, ref[r.index])
            for r, ok in zip(run.requests, same, strict=True)
            if not ok
        }
    return out


def first_difference(a: list[int], b: list[int]) -> int:
    """Index of the first token where two outputs differ (the shorter length if one is a prefix)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


NEAR_TIE = 1e-3  # top-2 logit gap (fp32) below which a lossless method may differ from greedy by float reordering


def divergence_gaps(
    model, prompts: list[list[int]], references: list[list[int]], outputs: list[list[int]]
) -> dict[int, float]:
    """For every output that differs from its reference (greedy) output: the target's top-2 logit gap at the first
    differing token, from a fresh forward over the prompt and the reference prefix.

    A lossless method (greedy verification) may differ from plain greedy decoding only where this gap is tiny:
    verifying several tokens in one forward reorders floating-point sums.
    """
    import torch

    gaps = {}
    for index, (prompt, want, got) in enumerate(zip(prompts, references, outputs, strict=True)):
        if want == got:
            continue
        at = first_difference(want, got)
        with torch.no_grad():
            top = model(input_ids=torch.tensor([prompt + want[:at]])).logits[0, -1].float().topk(2).values
        gaps[index] = float(top[0] - top[1])
    return gaps


def nll_per_token(model, prompts: list[list[int]], outputs: list[list[int]], temperature: float) -> float:
    """Mean −log p_T(token) of generated tokens under the target at `temperature`, one fresh forward per sequence
    (the quality figure of sampled arms: a sampler that follows the target scores close to plain sampling)."""
    per = nll_per_sequence(model, prompts, outputs, temperature)
    count = sum(n for _, n in per)
    return sum(total for total, _ in per) / count if count else float("nan")


def nll_per_sequence(
    model, prompts: list[list[int]], outputs: list[list[int]], temperature: float
) -> list[tuple[float, int]]:
    """(−Σ log p_T(token), token count) per non-empty output: the pieces of `nll_per_token`, kept apart so a report
    can put a standard error beside the mean (sampled text from 8 prompts is noisy)."""
    import torch

    per = []
    with torch.no_grad():
        for prompt, out in zip(prompts, outputs, strict=True):
            if not out:
                continue
            ids = torch.tensor([list(prompt) + list(out)])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double() / temperature, -1)
            per.append((-float(logp.gather(-1, torch.tensor(out).unsqueeze(-1)).sum()), len(out)))
    return per


def ratio_standard_error(per: list[tuple[float, int]]) -> float:
    """Standard error of Σ total / Σ count over sequences (the delta method for a ratio of sums): how far the
    per-token mean could move with other prompts and seeds."""
    n = len(per)
    count = sum(c for _, c in per)
    if n < 2 or count == 0:
        return float("nan")
    mean = sum(t for t, _ in per) / count
    avg = count / n
    var = sum((t - mean * c) ** 2 for t, c in per) / (n - 1)
    return (var / n) ** 0.5 / avg


def distinct_bigrams(outputs: list[list[int]]) -> float:
    """Mean share of distinct token bigrams per output: 1.0 for text that never repeats a pair, near 0 for a loop."""
    shares = [len(set(itertools.pairwise(t))) / (len(t) - 1) for t in outputs if len(t) > 1]
    return sum(shares) / len(shares) if shares else float("nan")
