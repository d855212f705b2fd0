"""A quality budget instead of raw knobs: pick CSD's (λ, τ) from a calibration's measured curve.

`specplug csd calibrate --min-agreement` serves calibration prompts with `ar` and with CSD at every (λ, τ) of a
grid and records the curve (agreement with `ar`, acceptance, speed per point) in the memory file
(`metadata.calibrated`). Serving (`lam: "auto"`) and benchmarks (`lam=auto`) choose from that curve here, for the
recorded budget or another one, so a budget can change without counting again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

CALIBRATED_KEY = "calibrated"
LOSSLESS = {"lam": "inf", "tau": 1.0, "agreement": 1.0, "lossless": True}


def _lam(value: Any) -> float:
    return math.inf if value in ("inf", math.inf) else float(value)


def choose(curve: list[Mapping[str, Any]], min_agreement: float) -> dict[str, Any]:
    """The point that meets the budget and accepts the most draft tokens (rescues are what buys speed); among
    equals the smallest λ (the most rescues), then the largest τ. None meets it → lossless (λ = ∞)."""
    ok = [p for p in curve if p["agreement"] >= min_agreement]
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
    curve = [dict(p, tau=p.get("tau", calibrated.get("tau", 0.01))) for p in calibrated["curve"]]
    point = choose(curve, float(budget))
    return {**point, "lam": _lam(point["lam"]), "tau": float(point["tau"]), "min_agreement": float(budget)}
