"""`specplug toolspec overhead`: drafting time per engine step, ToolSpec against vLLM's own `ngram` proposer.

Both drafters run on the same batch of real BFCL prompts (SmolLM2's rendering), each followed by its gold calls
written as the model writes them (`<tool_call>{…}</tool_call>`), one step per answer token, and the whole batch is
drafted at every step, the way vLLM calls a proposer after each verify pass. Verification is vLLM's own in both
arms, so the drafting time is the whole difference per step.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np


def _batch(batch: int, skip: int) -> tuple[Any, list[list[int]], list[list[int]], list[Any]]:
    from transformers import AutoTokenizer

    from specplug.assets import load_dataset, render_prompt, resolve_model
    from specplug.assets.prompts import format_tool_call

    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    records = load_dataset("bfcl", split="single_turn", limit=skip + batch)[skip:]
    prompts = [render_prompt(r, tokenizer) for r in records]
    answers = []
    for r in records:
        calls = "".join(format_tool_call(c["name"], c["arguments"]) for c in r.gold["reference_calls"])
        answers.append([*tokenizer.encode(calls, add_special_tokens=False), tokenizer.eos_token_id])
    return tokenizer, prompts, answers, [r.tools for r in records]


def _vllm_ngram(k: int, max_model_len: int, batch: int):
    from vllm.v1.spec_decode.ngram_proposer import NgramProposer

    config = SimpleNamespace(
        speculative_config=SimpleNamespace(prompt_lookup_min=2, prompt_lookup_max=4, num_speculative_tokens=k),
        model_config=SimpleNamespace(max_model_len=max_model_len),
        scheduler_config=SimpleNamespace(max_num_seqs=max(batch, 1024)),
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
    )
    return NgramProposer(config)


def measure(batch: int = 16, k: int = 8, skip: int = 0, repeats: int = 3) -> dict[str, Any]:
    from specplug.core.toolspec.config import ToolSpecConfig
    from specplug.core.toolspec.drafter import ToolSpecDrafter

    tokenizer, prompts, answers, tools = _batch(batch, skip)
    steps = max(len(a) for a in answers)
    max_model_len = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True)) + k + 1
    token_ids = np.zeros((batch, max_model_len), dtype=np.int32)
    for row, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        token_ids[row, : len(p) + len(a)] = p + a
    ngram = _vllm_ngram(k, max_model_len, batch)
    first = np.array([len(p) for p in prompts], dtype=np.int32)
    ngram.propose(k, [[1]] * batch, first, token_ids)  # compile for this batch shape (numba), untimed

    timings: dict[str, list[float]] = {"vllm_ngram": [], "toolspec": []}
    drafted = {"vllm_ngram": 0, "toolspec": 0}
    for rep in range(repeats):
        drafter = ToolSpecDrafter(ToolSpecConfig(num_speculative_tokens=k), tokenizer)
        for row in range(batch):
            drafter.start_request(f"{rep}-{row}", prompts[row], tools=tools[row], tenant="bench")
        for step in range(steps):
            live = [row for row in range(batch) if step < len(answers[row])]
            lengths = np.array([len(prompts[r]) + min(step, len(answers[r])) for r in range(batch)], dtype=np.int32)
            sampled = [[int(token_ids[r, lengths[r] - 1])] if r in live else [] for r in range(batch)]
            began = time.perf_counter()
            out = ngram.propose(k, sampled, lengths, token_ids)
            timings["vllm_ngram"].append(time.perf_counter() - began)
            drafted["vllm_ngram"] += sum(len(d) for d in out)
            began = time.perf_counter()
            for r in live:
                drafted["toolspec"] += len(drafter.draft(f"{rep}-{r}", token_ids[r, : lengths[r]].tolist(), k))
            timings["toolspec"].append(time.perf_counter() - began)
        for row in range(batch):
            drafter.finish_request(f"{rep}-{row}")
    return {
        "batch": batch,
        "k": k,
        "steps_per_repeat": steps,
        "repeats": repeats,
        "mean_prompt_tokens": float(np.mean([len(p) for p in prompts])),
        "per_step_ms": {name: 1000 * float(np.mean(t)) for name, t in timings.items()},
        "median_step_ms": {name: 1000 * float(np.median(t)) for name, t in timings.items()},
        "p90_step_ms": {name: 1000 * float(np.percentile(t, 90)) for name, t in timings.items()},
        "draft_tokens": drafted,
        "note": "drafting only; verification is vLLM's own in both arms. CPU, one process, same batch and steps.",
    }
