"""CSD's quality budget: pick λ so that CSD's outputs agree with the target's own at least `min_agreement` of the time.

CSD is lossy by design; λ (observations before a (draft, target) pair may be rescued) sets how lossy. A user cannot
pick λ by feel, so `specplug csd calibrate --min-agreement B` serves the calibration prompts with `ar` and with CSD
at each λ of a grid (same engine runner, greedy, the memory just counted), measures agreement with `ar` — per-test
outcomes on the task's own tests where the prompts have tests (functional agreement, a signal even when both fail),
otherwise identical outputs — and keeps the smallest λ (the most rescues, the most speed) whose agreement is at least
B. λ = ∞ (standard, lossless speculative decoding) always qualifies, so there is always an answer.
The whole curve goes into the memory file's provenance, so a reader sees what each point of quality costs.
"""

from __future__ import annotations

import math
import sys
from typing import Any

LAMBDA_GRID = (2, 3, 4, 6, 8, 12)


def agreement(scorer, ar_outputs: dict[int, list[int]], outputs: dict[int, list[int]]) -> tuple[float, str]:
    """(agreement with ar, the measure used): functional agreement on the task's tests, else identical outputs."""
    if scorer is not None and callable(getattr(scorer, "outcomes", None)):
        from specplug.bench.quality import agreement_with

        base = scorer.outcomes(ar_outputs)
        if base:
            value = agreement_with(base, scorer.outcomes(outputs))["functional_agreement"]
            if value is not None:
                return float(value), "functional_agreement"
    common = sorted(ar_outputs.keys() & outputs.keys())
    return (sum(ar_outputs[i] == outputs[i] for i in common) / len(common) if common else 0.0), "exact_match"


def choose(curve: list[dict[str, Any]], min_agreement: float) -> dict[str, Any]:
    """The point with the smallest λ whose agreement meets the budget (λ = ∞ when none does)."""
    ok = [p for p in curve if p["agreement"] >= min_agreement]
    if not ok:
        return {"lam": "inf", "agreement": 1.0, "measure": curve[0]["measure"] if curve else "exact_match"}
    return min(ok, key=lambda p: math.inf if p["lam"] == "inf" else p["lam"])


def sweep(
    model_path,
    workload,
    proposer: str,
    memory_path: str,
    namespace: str,
    tau: float,
    lams: tuple[int, ...],
    concurrency: int,
    max_tokens: int,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """Serve `workload` with `ar` and CSD at each λ on vLLM (one engine each, the bench's runner); one curve point
    per λ: agreement with ar, the measure, tok/s ÷ ar, acceptance and rescued tokens."""
    from specplug.bench.arms import parse_arm
    from specplug.bench.measure import ArmJob, summarize
    from specplug.bench.quality import decoder_for, scorer_for
    from specplug.bench.vllm_engine import run_arm

    kind, _, rest = proposer.partition(":")
    base = f"csd:proposer={kind}:memory={memory_path}:namespace={namespace}:tau={tau}" + (f":{rest}" if rest else "")
    scorer = scorer_for(workload, decoder_for(workload))

    def serve(spec: str):
        print(f"[specplug csd calibrate] serving the calibration prompts with {spec} ...", file=sys.stderr, flush=True)
        (run,) = run_arm(ArmJob(parse_arm(spec), model_path, workload, [concurrency], max_tokens, timeout_s))
        if run.error:
            raise RuntimeError(f"{spec}: {run.error}")
        return run

    ar = serve("ar")
    ar_outputs = {q.index: q.output_token_ids for q in ar.requests}
    ar_rate = summarize(ar, None)["output_tokens_per_s"]
    curve = []
    for lam in lams:
        run = serve(f"{base}:lam={lam}")
        rec = summarize(run, ar)
        value, measure = agreement(scorer, ar_outputs, {q.index: q.output_token_ids for q in run.requests})
        point = {
            "lam": lam,
            "tau": tau,
            "agreement": value,
            "measure": measure,
            "exact_match": rec["exact_match"],
            "speedup_vs_ar": rec["output_tokens_per_s"] / ar_rate if ar_rate else None,
            "acceptance_rate": rec["acceptance_rate"],
            "rescued": run.num_rescued,
        }
        print(
            f"[specplug csd calibrate]   λ={lam}: {measure} {value:.3f}, {point['speedup_vs_ar']:.2f}× ar",
            file=sys.stderr,
            flush=True,
        )
        curve.append(point)
    return curve
