"""`specplug bench cost-curve`: what one forward over P new positions costs, relative to one position.

Speculative methods buy fewer target forwards with wider ones: SMC-SD scores N·(γ+1) positions per forward,
draft-model SD γ+1 per request. Where decode is memory-bound (weights streamed once per forward) a wider forward
costs little more than one position, up to the width where compute takes over and the cost bends upward. This
measures that curve on this machine for the target and, optionally, a draft: after a cached context of
`--context` tokens, the median wall time of one forward over P new positions (one request), in transformers fp32
— the same weights and math the engines run, without their scheduling around it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="target: a model asset or checkpoint dir (smollm2-135m)")
    p.add_argument("--draft", help="also measure this draft (a distilled draft's name, an asset or a dir)")
    p.add_argument("--positions", default="1,2,4,8,12,16,24,32,48,64", help="forward widths P to time")
    p.add_argument("--context", type=int, default=256, help="cached tokens before the timed forward (256)")
    p.add_argument("--repeats", type=int, default=15, help="timed forwards per width; the median is kept (15)")
    p.add_argument("--out", type=Path, default=Path("results/cost-curve"), help="writes results.json, report.md")


def run(args: argparse.Namespace) -> int:
    from specplug.assets import resolve_model
    from specplug.bench.config import integers
    from specplug.bench.timing import forward_ms
    from specplug.core.files import write_atomic
    from specplug.reference.models import load_causal_lm

    widths = sorted(set(integers("positions", args.positions)))
    models = {"target": resolve_model(args.model)}
    if args.draft:
        models["draft"] = resolve_model(args.draft)
    rows: dict[str, dict[int, float]] = {}
    for role, path in models.items():
        model = load_causal_lm(path)
        rows[role] = {}
        for p in widths:
            rows[role][p] = forward_ms(model, p, args.context, args.repeats)
            print(f"[cost-curve] {role} P={p}: {rows[role][p]:.1f} ms", file=sys.stderr, flush=True)
    command = "specplug " + shlex.join(getattr(args, "argv", ["bench", "cost-curve"]))
    one = rows["target"][widths[0]]
    lines = [
        "# Forward cost over P new positions",
        "",
        f"`{command}`",
        "",
        f"One request, {args.context} cached tokens, median of {args.repeats} forwards, transformers fp32, this "
        "machine. `÷ P=1` is the cost relative to a one-position target forward.",
        "",
        "| P | " + " | ".join(f"{role} ms | {role} ÷ target P=1" for role in rows) + " |",
        "| --- | " + " | ".join("--- | ---" for _ in rows) + " |",
    ]
    for p in widths:
        cells = " | ".join(f"{rows[r][p]:.1f} | {rows[r][p] / one:.2f}" for r in rows)
        lines.append(f"| {p} | {cells} |")
    args.out.mkdir(parents=True, exist_ok=True)
    data = {
        "command": command,
        "context": args.context,
        "repeats": args.repeats,
        "models": {k: str(v) for k, v in models.items()},
    }
    write_atomic(args.out / "results.json", json.dumps({**data, "ms": rows}, indent=2))
    write_atomic(args.out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
