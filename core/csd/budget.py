"""A quality budget instead of raw knobs: pick CSD's (λ, τ) from a calibration's measured curve.

`specplug csd calibrate --min-agreement` serves calibration prompts with `ar` and with CSD at every (λ, τ) of a
grid and records the curve (agreement with `ar`, acceptance, speed per point) in the memory file
(`metadata.calibrated`). Serving (`lam: "auto"`) and benchmarks (`lam=auto`) choose from that curve here, for the
recorded budget or another one, so a budget can change without counting again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

CALIBRATED_KEY = "calibrated"
LOSSLESS = {"lam": "inf", "tau": 1.0, "agreement": 1.0, "lossless": True}
CONFIDENCE = 0.95  # one-sided confidence of the agreement bound a budget is checked against


def _lam(value: Any) -> float:
    return math.inf if value in ("inf", math.inf) else float(value)


def wilson_lower(agreement: float, prompts: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Wilson lower bound on an agreement rate measured on `prompts` prompts."""
    if prompts <= 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    center = agreement + z * z / (2 * prompts)
    spread = z * math.sqrt(agreement * (1 - agreement) / prompts + z * z / (4 * prompts * prompts))
    return (center - spread) / (1 + z * z / prompts)


def assured(point: Mapping[str, Any], confidence: float | None = CONFIDENCE) -> float:
    """The agreement a point is trusted with: its Wilson lower bound when the curve says on how many prompts it
    was measured, else (older curves, or confidence None) the measured rate itself."""
    prompts = point.get("prompts")
    if confidence is None or not isinstance(prompts, int):
        return float(point["agreement"])
    return wilson_lower(float(point["agreement"]), prompts, confidence)


def choose(
    curve: list[Mapping[str, Any]], min_agreement: float, confidence: float | None = CONFIDENCE
) -> dict[str, Any]:
    """The point whose agreement is assured at the budget — its lower confidence bound, not the rate measured on
    a handful of calibration prompts, is at least `min_agreement` — and that accepts the most draft tokens (rescues
    are what buy speed); among equals the smallest λ (the most rescues), then the largest τ. None qualifies →
    lossless (λ = ∞). On 16 prompts even 16/16 agreeing assures only 0.86 at 95% confidence: a higher budget
    needs more calibration prompts, or it is served lossless."""
    ok = [p for p in curve if assured(p, confidence) >= min_agreement]
    if not ok:
        return {**LOSSLESS, "measure": curve[0]["measure"] if curve else "exact_match"}
    best = max(ok, key=lambda p: (p.get("acceptance_rate") or 0.0, -_lam(p["lam"]), float(p.get("tau", 0.0))))
    return dict(best)


def calibrated_choice(metadata: Mapping[str, Any], min_agreement: float | None = None) -> dict[str, Any] | None:
    """(λ, τ) and the measured point for `min_agreement` (default: the budget the file was calibrated for) from a
    memory file's metadata; None when the file was not calibrated with a budget."""
    calibrated = metadata.get(CALIBRATED_KEY)
    if not isinstance(calibrated, Mapping) or not isinstance(calibrated.get("curve"), list):
        return None
    budget = calibrated.get("min_agreement") if min_agreement is None else min_agreement
    prompts = calibrated.get("sweep_prompts")  # curves written before points recorded their own prompt count
    curve = [
        {"tau": calibrated.get("tau", 0.01), **({"prompts": prompts} if isinstance(prompts, int) else {}), **p}
        for p in calibrated["curve"]
    ]
    point = choose(curve, float(budget), calibrated.get("confidence", CONFIDENCE))
    return {**point, "lam": _lam(point["lam"]), "tau": float(point["tau"]), "min_agreement": float(budget)}
