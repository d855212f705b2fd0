"""results.json (versioned schema), report.md and plots for one `specplug bench` run."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_VERSION = 1
BUILTIN_KINDS = {"ngram", "draft_model", "suffix", "spec"}  # the engines' own speculative methods


def add_ratios(records: list[dict], kinds: dict[str, str]) -> None:
    """Throughput ratios within the same round and concurrency: vs `ar`, and vs the best built-in arm."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["round"], rec["concurrency"]), []).append(rec)
    for group in groups.values():
        ok = [r for r in group if r.get("output_tokens_per_s")]
        ar = next((r for r in ok if kinds[r["arm"]] == "ar"), None)
        builtin = [r for r in ok if kinds[r["arm"]] in BUILTIN_KINDS]
        best = max(builtin, key=lambda r: r["output_tokens_per_s"], default=None)
        for rec in ok:
            rec["speedup_vs_ar"] = rec["output_tokens_per_s"] / ar["output_tokens_per_s"] if ar else None
            rec["speedup_vs_best_builtin"] = rec["output_tokens_per_s"] / best["output_tokens_per_s"] if best else None
            rec["best_builtin_arm"] = best["arm"] if best else None


def _fmt(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _machine_line(results: dict) -> str:
    machine = results.get("machine") or {}
    line = f"Machine: {machine.get('cpu_count', '?')} CPU cores, {machine.get('platform', '?')}"
    return line + (f". {results['note']}" if results.get("note") else "") + "."


def _exact(r: dict) -> str:
    """Exact match vs ar, with how many divergences of a lossless arm were checked near-ties."""
    text = _fmt(r["exact_match"])
    if "near_tie_divergences" in r:
        text += f" ({r['near_tie_divergences']}/{len(r['divergence_top2_gap'])} div. at near-ties)"
    return text


def markdown(results: dict) -> str:
    metric = results.get("accuracy_metric")
    lines = [
        f"# specplug bench — {results['engine']} / {results['model']} / {results['dataset']}",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Engine: {results['engine_version']}; settings shared by every arm: "
        f"`{json.dumps(results['engine_settings'])}`",
        _machine_line(results),
        f"Prompts: {results['num_prompts']} from {results['dataset']} (token digest {results['prompt_digest']}), "
        f"max {results['max_tokens']} new tokens, {_sampling(results)}; warm-up excluded; rounds: {results['rounds']}.",
        f"Prompt rendering: {results.get('prompt_rendering') or 'the model chat template'}.",
        f"Accuracy: {metric}, scored the same way for every arm."
        if metric
        else "Accuracy: n/a (this dataset has no gold answers the bench scores).",
        "",
        "| round | conc | arm | out tok/s | × ar | × best built-in | TTFT ms | TPOT ms | p50 e2e ms "
        "| mean acc. len | acc. rate | rescued | fwd/token | exact match vs ar | accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["records"]:
        if "error" in r:
            lines.append(f"| {r['round']} | {r['concurrency']} | {r['arm']} | FAILED: {r['error'][:80]} |")
            continue
        accuracy = "n/a" if r.get("accuracy") is None else f"{r['accuracy']:.2f}"
        if r.get("accuracy_scored"):
            accuracy += f" ({r['accuracy_scored'] - len(r.get('accuracy_failed', []))}/{r['accuracy_scored']})"
        lines.append(
            f"| {r['round']} | {r['concurrency']} | {r['arm']} | {_fmt(r['output_tokens_per_s'], '.1f')} "
            f"| {_fmt(r.get('speedup_vs_ar'))} | {_fmt(r.get('speedup_vs_best_builtin'))} "
            f"| {_fmt(r['ttft_ms'], '.0f')} "
            f"| {_fmt(r['tpot_ms'], '.1f')} | {_fmt(r['e2e_latency_ms']['p50'], '.0f')} "
            f"| {_fmt(r['mean_accepted_length'])} | {_fmt(r['acceptance_rate'])} | {_fmt(r.get('num_rescued'), 'd')} "
            f"| {_fmt(r['target_forwards_per_token'], '.3f')} | {_exact(r)} | {accuracy} |"
        )
    lines += [
        "",
        "Ratios are within one run (same round, same concurrency). Absolute times on shared CPUs are noise; "
        "exact match is the fraction of prompts whose greedy output equals the `ar` arm's token for token; "
        "accuracy is the task score of each arm's own outputs against the dataset's gold answers. "
        "`rescued` counts accepted draft tokens that only CSD's calibrated rule kept (included in acc. rate); "
        "CSD is lossy, so its exact match is its agreement with the target's own greedy output. For lossless arms a "
        "divergence from `ar` is checked: a near-tie means the target's top-2 logits at the first differing token "
        "are within 1e-3 (fresh fp32 forward), i.e. floating-point reordering, not a wrong draft accepted.",
    ]
    lines += _quality_table(results)
    if results.get("unavailable"):
        lines += ["", *(f"Arm `{arm}` unavailable: {why}." for arm, why in results["unavailable"].items())]
    extra = [r for r in results["records"] if r.get("drafted_by_source") or r.get("tool_call_token_fraction")]
    if extra:
        lines += ["", "| round | conc | arm | tool-call tokens | draft tokens by source |", "|---|---|---|---|---|"]
        for r in extra:
            sources = ", ".join(f"{k} {v}" for k, v in sorted((r.get("drafted_by_source") or {}).items())) or "—"
            share = r.get("tool_call_token_fraction")
            share_text = "—" if share is None else f"{100 * share:.1f}%"
            lines.append(f"| {r['round']} | {r['concurrency']} | {r['arm']} | {share_text} | {sources} |")
        lines += [
            "",
            "Tool-call tokens: share of output tokens inside `<tool_call>…</tool_call>` (schema drafting helps only "
            "there). Sources: ToolSpec draft tokens from the tool schema, the retrieval memory, the request's own "
            "context, and token recycling.",
        ]
    if results.get("plots"):
        names = short_names({a["label"]: a["kind"] for a in results.get("arms", [])})
        key = ", ".join(f"{short} = `{label}`" for label, short in names.items() if short != label)
        lines += ["", *([f"Plot key: {key}."] if key else []), *(f"![{Path(n).stem}]({n})" for n in results["plots"])]
    return "\n".join(lines) + "\n"


def _sampling(results: dict) -> str:
    t = (results.get("sampling") or {}).get("temperature") or 0
    text = f"sampled at temperature {t} (seed 1000 + prompt index, the same in every arm)" if t else "greedy"
    constrain = results.get("constrain") or "none"
    if constrain != "none":
        choice = '`tool_choice: "required"`' if constrain == "required" else "a named function (the first tool)"
        text += f"; tool calls constrained as vLLM's OpenAI server does for {choice} (structured outputs, every arm)"
    return text


QUALITY_COLUMNS = {  # key: (header, format)
    "functional_agreement": ("functional agreement vs ar", ".2f"),
    "test_agreement": ("per-test agreement vs ar", ".2f"),
    "call_agreement": ("tool calls equal ar's", ".2f"),
    "mean_logp": ("target log p / token", ".3f"),
    "logp_change_vs_ar": ("log p vs ar", "+.1%"),
    "distinct_bigrams": ("distinct bigrams", ".3f"),
    "bigram_change_vs_ar": ("bigrams vs ar", "+.1%"),
}


def _quality_table(results: dict) -> list[str]:
    """The quality figures with signal (functional agreement, call agreement, sampled-text scores), where measured."""
    keys = [k for k in QUALITY_COLUMNS if any(r.get(k) is not None for r in results["records"])]
    if not keys:
        return []
    lines = [
        "",
        "| round | conc | arm | " + " | ".join(QUALITY_COLUMNS[k][0] for k in keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for r in results["records"]:
        if "error" not in r:
            cells = " | ".join(_fmt(r.get(k), QUALITY_COLUMNS[k][1]) for k in keys)
            lines.append(f"| {r['round']} | {r['concurrency']} | {r['arm']} | {cells} |")
    lines += [
        "",
        "Functional agreement: share of prompts whose completion has the same per-test outcomes as `ar`'s on the "
        "task's tests (a signal even where both fail). Sampled text: mean target log-prob per output token (fresh "
        "target forward at the sampling temperature) and share of distinct bigrams, each beside `ar` sampled.",
    ]
    return lines


def short_names(kinds: dict[str, str]) -> dict[str, str]:
    """Plot and table labels for arm specs: the arm kind, numbered when a kind appears twice (reports carry the key
    back to the full spec), so a plot never carries a legend of full arm specs."""
    names: dict[str, str] = {}
    for label, kind in kinds.items():
        base = "draft" if kind == "draft_model" else kind
        name, k = base, 2
        while name in names.values():
            name, k = f"{base}{k}", k + 1
        names[label] = name
    return names


def plots(results: dict, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    ok = [r for r in results["records"] if "error" not in r and r["round"] == 0]
    names = short_names({a["label"]: a["kind"] for a in results.get("arms", [])})
    seen = {r["arm"] for r in ok}
    arms = [a["label"] for a in results.get("arms", []) if a["label"] in seen] or sorted(seen)
    concs = sorted({r["concurrency"] for r in ok})
    rate = {(r["arm"], r["concurrency"]): r["output_tokens_per_s"] or 0 for r in ok}
    width = 0.8 / max(1, len(concs))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(arms) + 2), 4))
    for j, conc in enumerate(concs):
        xs = [i + (j - (len(concs) - 1) / 2) * width for i in range(len(arms))]
        ax.bar(xs, [rate.get((a, conc), 0) for a in arms], width=width * 0.95, label=f"c={conc}")
    ax.set_xticks(range(len(arms)), [names.get(a, a) for a in arms])
    ax.set_ylabel("output tokens/s")
    ax.set_title(f"{results['engine']} — {results['dataset']} (round 0; arm key in report.md)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)
    made = ["throughput.png"]
    hist: dict[str, list[int]] = {}  # one histogram per arm: round 0, lowest concurrency (greedy: the same at all)
    for r in sorted(ok, key=lambda r: (r["round"], r["concurrency"])):
        if r.get("accepted_per_draft"):
            hist.setdefault(r["arm"], r["accepted_per_draft"])
    if hist:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, values in hist.items():
            ax.hist(values, bins=range(max(values) + 2), alpha=0.5, label=names.get(arm, arm), align="left")
        ax.set_xlabel("draft tokens accepted per step")
        ax.set_ylabel("count")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "accepted_length_hist.png", dpi=100)
        plt.close(fig)
        made.append("accepted_length_hist.png")
    return made
