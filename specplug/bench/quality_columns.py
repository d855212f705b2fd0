"""Quality figures with signal beside every speed figure, computed the same way for every arm of a run.

Exact match vs `ar` says whether an arm changed the output; it is no use for a lossy method whose text differs but
means the same, nor for sampled text. So, per workload:
- code (HumanEval): *functional agreement with `ar`*: the arm's completion and `ar`'s run on the task's tests and
  their per-test outcomes are compared — a signal even when both fail every test;
- tool calls (records with gold calls): the calls the arm emitted equal the calls `ar` emitted;
- sampled text: mean target log-prob per token (fresh target forward at the sampling temperature) and the share
  of distinct bigrams, each beside `ar` sampled with the same seeds.
"""

from __future__ import annotations

from typing import Any

from specplug.bench.measure import ArmRun, distinct_bigrams, nll_per_sequence, ratio_standard_error

_TARGETS: dict[str, Any] = {}


def add_quality(
    records: list[dict],
    runs: dict[tuple[str, int], ArmRun],
    reference,
    workload,
    scorer,
    decode,
    model_path,
    temperature: float,
    rnd: int,
) -> None:
    """Add the workload's quality columns to the records of round `rnd` (in place)."""
    mine = {(r["arm"], r["concurrency"]): r for r in records if r.get("round") == rnd and "error" not in r}
    outputs = {key: {q.index: q.output_token_ids for q in run.requests} for key, run in runs.items() if not run.error}
    if temperature > 0:
        _sampled(mine, outputs, reference, workload, model_path, temperature)
        return
    if reference is None:
        return
    _functional(mine, outputs, reference.label, scorer)
    if decode is not None and any(workload.tools):
        _calls(mine, outputs, reference.label, decode)


def _functional(mine: dict, outputs: dict, ar: str, scorer) -> None:
    """Per-test outcomes of each arm's completions against `ar`'s (HumanEval-style records only)."""
    try:
        from specplug.bench.quality import agreement_with
    except ImportError:
        return
    if scorer is None or not callable(getattr(scorer, "outcomes", None)):
        return
    for (label, conc), rec in mine.items():
        ref = outputs.get((ar, conc))
        if ref is None:
            continue
        base = scorer.outcomes(ref)
        if not base:
            return
        if label == ar:
            rec.update(functional_agreement=1.0, test_agreement=1.0, agreement_scored=len(base))
            continue
        rec.update(agreement_with(base, scorer.outcomes(outputs[(label, conc)])))


def _calls(mine: dict, outputs: dict, ar: str, decode) -> None:
    """Share of prompts whose emitted tool calls equal `ar`'s (same names and arguments, as a multiset)."""
    try:
        from specplug.bench.quality.toolcalls import calls_match, parse_calls
    except ImportError:
        return
    for (label, conc), rec in mine.items():
        ref = outputs.get((ar, conc))
        if ref is None:
            continue
        got = outputs[(label, conc)]
        same = [calls_match(parse_calls(decode(got[i])), parse_calls(decode(ref[i]))) for i in got if i in ref]
        rec["call_agreement"] = sum(same) / len(same) if same else None


def _sampled(mine: dict, outputs: dict, reference, workload, model_path, temperature: float) -> None:
    """Target log-prob per token and distinct-bigram share for every arm, and each relative to `ar` sampled."""
    from specplug.reference.models import load_causal_lm

    key = str(model_path)
    target = _TARGETS.get(key) or _TARGETS.setdefault(key, load_causal_lm(model_path))
    for (label, conc), rec in mine.items():
        got = outputs[(label, conc)]
        indices = sorted(got)
        texts = [got[i] for i in indices]
        per = nll_per_sequence(target, [workload.prompts[i] for i in indices], texts, temperature)
        count = sum(n for _, n in per)
        rec["mean_logp"] = -sum(t for t, _ in per) / count if count else float("nan")
        rec["mean_logp_se"] = ratio_standard_error(per)
        rec["distinct_bigrams"] = distinct_bigrams(texts)
        shares = [distinct_bigrams([t]) for t in texts if len(t) > 1]
        rec["distinct_bigrams_se"] = _standard_error(shares)
    if reference is None:
        return
    for (label, conc), rec in mine.items():
        ar = mine.get((reference.label, conc))
        if ar is None or label == reference.label:
            continue
        rec["logp_change_vs_ar"] = relative_change(rec["mean_logp"], ar["mean_logp"])
        rec["ar_mean_logp"], rec["ar_distinct_bigrams"] = ar["mean_logp"], ar["distinct_bigrams"]
        # Two standard errors of each difference, as a fraction of ar's figure: what 8 prompts cannot resolve.
        rec["logp_noise"] = 2 * _hypot(rec["mean_logp_se"], ar["mean_logp_se"]) / abs(ar["mean_logp"] or 1)
        rec["bigram_noise"] = (
            2 * _hypot(rec["distinct_bigrams_se"], ar["distinct_bigrams_se"]) / (ar["distinct_bigrams"] or 1)
        )
        rec["bigram_change_vs_ar"] = relative_change(rec["distinct_bigrams"], ar["distinct_bigrams"])


def relative_change(value: float, reference: float) -> float | None:
    """(value − reference) / |reference|; None when the reference is 0 or missing."""
    if reference is None or value is None or reference == 0:
        return None
    return (value - reference) / abs(reference)


def _standard_error(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5


def _hypot(a: float, b: float) -> float:
    """√(a² + b²), NaN-safe: an unknown error counts as none (the fixed tolerance still applies)."""
    return ((a if a == a else 0.0) ** 2 + (b if b == b else 0.0) ** 2) ** 0.5
