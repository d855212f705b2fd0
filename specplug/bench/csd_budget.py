"""CSD's quality budget: pick λ so that CSD's outputs agree with the target's own at least `min_agreement` of the time.

CSD is lossy by design; λ (observations before a (draft, target) pair may be rescued) sets how lossy. A user cannot
pick λ by feel, so `specplug csd calibrate --min-agreement B` serves the calibration prompts with `ar` and with CSD
at each (λ, τ) of a grid (same engine runner, greedy, the memory just counted), measures agreement with `ar` —
per-test outcomes on the task's own tests where the prompts have tests (functional agreement, a signal even when
both fail), otherwise identical outputs. `core.csd.budget.choose` keeps the point within budget that accepts the
most draft tokens; λ = ∞ (standard, lossless speculative decoding) always qualifies, so there is always an answer.
The whole curve goes into the memory file's provenance, so a reader sees what each point of quality costs, and
serving (`lam: "auto"`, optionally with another `min_agreement`) chooses from it without counting again.
"""

from __future__ import annotations

import sys
from typing import Any

from specplug.core.csd.budget import choose

__all__ = ["LAMBDA_GRID", "TAU_GRID", "agreement", "choose", "sweep"]

LAMBDA_GRID = (2, 3, 4, 6, 8, 12)
TAU_GRID = (0.01,)


def agreement(scorer, ar_outputs: dict[int, list[int]], outputs: dict[int, list[int]]) -> tuple[float, str]:
    """(agreement with ar, the measure used): functional agreement on the task's tests (code), answer agreement
    (the same tool calls, or the same text when no call is made) on tool-call tasks, else identical outputs."""
    if scorer is not None and callable(getattr(scorer, "outcomes", None)):
        from specplug.bench.quality import agreement_with, task_of

        base = scorer.outcomes(ar_outputs)
        if base:
            value = agreement_with(base, scorer.outcomes(outputs))["functional_agreement"]
            if value is not None:
                records = getattr(scorer, "records", None)
                code = records is None or any(task_of(records[i]) == "humaneval" for i in base)
                return float(value), "functional_agreement" if code else "answer_agreement"
    common = sorted(ar_outputs.keys() & outputs.keys())
    return (sum(ar_outputs[i] == outputs[i] for i in common) / len(common) if common else 0.0), "exact_match"


def sweep(
    model_path,
    workload,
    proposer: str,
    memory_path: str,
    namespace: str,
    taus: tuple[float, ...],
    lams: tuple[int, ...],
    concurrency: int,
    max_tokens: int,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """Serve `workload` with `ar` and CSD at each (λ, τ) on vLLM (one engine each, the bench's runner); one curve
    point per pair: agreement with ar, the measure, tok/s ÷ ar, acceptance and rescued tokens."""
    from specplug.bench.arms import parse_arm
    from specplug.bench.measure import ArmJob, summarize
    from specplug.bench.quality import decoder_for, scorer_for
    from specplug.bench.vllm_engine import run_arm

    kind, _, rest = proposer.partition(":")
    base = f"csd:proposer={kind}:memory={memory_path}:namespace={namespace}" + (f":{rest}" if rest else "")
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
    for tau in taus:
        for lam in lams:
            run = serve(f"{base}:lam={lam}:tau={tau}")
            rec = summarize(run, ar)
            value, measure = agreement(scorer, ar_outputs, {q.index: q.output_token_ids for q in run.requests})
            point = {
                "lam": lam,
                "tau": tau,
                "agreement": value,
                "prompts": len(ar_outputs),
                "measure": measure,
                "exact_match": rec["exact_match"],
                "speedup_vs_ar": rec["output_tokens_per_s"] / ar_rate if ar_rate else None,
                "acceptance_rate": rec["acceptance_rate"],
                "rescued": run.num_rescued,
            }
            print(
                f"[specplug csd calibrate]   λ={lam} τ={tau}: {measure} {value:.3f}, "
                f"{point['speedup_vs_ar']:.2f}× ar, acceptance {point['acceptance_rate']:.2f}",
                file=sys.stderr,
                flush=True,
            )
            curve.append(point)
    return curve
