"""What a draft learns from: the target's own sampled answers to prompts the benchmarks never measure.

Why sampled (T = 1) answers and the target's log-probs at every answer position: SMC-SD weighs a draft token by
p/q and rejection sampling accepts it with min(1, p/q), so the draft must put mass wherever the target does on
the text the target itself writes — greedy answers or human text would teach it the wrong positions. The
teacher is stored as the top-K tokens' log-probs plus the rest of the mass as one bucket (K = 32 holds nearly all
of it for a 135M model at T = 1), so training never runs the target again and the shards stay small.

Prompts: BFCL's single-turn user questions (asked plainly, without tools: short requests across many domains)
and HumanEval problems 96..163. Never MT-Bench (SMC-SD's benchmark) and never HumanEval 0..95 (CSD's evaluation
and calibration slices).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HUMANEVAL_FIRST_TRAINING_PROBLEM = 96  # 0..31 are CSD's held-out evaluation prompts, 32..95 its calibration slice
EXCLUDED = "MT-Bench (all), HumanEval 0..95"


@dataclass(frozen=True)
class TrainingPrompt:
    id: str
    ids: list[int]


def training_prompts(tokenizer: Any, *, max_prompt_tokens: int) -> list[TrainingPrompt]:
    """Every candidate prompt, chat-templated for the target, in a fixed order (shuffled by the caller's seed)."""
    from specplug.assets import load_dataset, render_prompt

    prompts = []
    for record in load_dataset("bfcl", split="single_turn"):
        question = next((m["content"] for m in record.messages if m["role"] == "user"), None)
        if not isinstance(question, str) or not question.strip():
            continue
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        prompts.append(TrainingPrompt(f"bfcl/{record.id}", list(tokenizer(text, add_special_tokens=False).input_ids)))
    for record in load_dataset("humaneval")[HUMANEVAL_FIRST_TRAINING_PROBLEM:]:
        prompts.append(TrainingPrompt(record.id, render_prompt(record, tokenizer)))
    return [p for p in prompts if 0 < len(p.ids) <= max_prompt_tokens]


def split_prompts(
    prompts: Sequence[TrainingPrompt], *, num_train: int, num_heldout: int, seed: int
) -> tuple[list[TrainingPrompt], list[TrainingPrompt]]:
    """A seeded shuffle cut into training and held-out prompts (disjoint)."""
    if num_train + num_heldout > len(prompts):
        raise ValueError(
            f"asked for {num_train} training + {num_heldout} held-out prompts, but only {len(prompts)} qualify"
        )
    order = list(prompts)
    random.Random(seed).shuffle(order)
    return order[:num_train], order[num_train : num_train + num_heldout]


def prompts_digest(prompts: Sequence[TrainingPrompt]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.id, p.ids]).encode())
    return h.hexdigest()


@dataclass
class Shard:
    """A batch of sampled sequences: `tokens` right-padded with -1, answers from `start`, teacher per answer token."""

    tokens: torch.Tensor  # [B, T] int64, -1 = padding
    start: torch.Tensor  # [B] int64: index of the first answer token
    length: torch.Tensor  # [B] int64: prompt + answer tokens (the end token included)
    top_ids: torch.Tensor  # [B, M, K] int64: the target's top-K tokens at answer position m
    top_logp: torch.Tensor  # [B, M, K] float32: their log-probs (T = 1); answer positions past `length` are junk

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).contiguous() for k in ("tokens", "start", "length", "top_ids", "top_logp")}


def sample_shard(
    target: Any,
    prompts: Sequence[TrainingPrompt],
    *,
    max_new_tokens: int,
    top_k: int,
    eos_ids: Sequence[int],
    pad_id: int,
    seed: int,
) -> Shard:
    """Sample the target at T = 1 on a batch of prompts, keeping its top-K log-probs at every answer position."""
    width = max(len(p.ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):  # left padding: every row's answer starts at column `width`
        ids[row, width - len(p.ids) :] = torch.tensor(p.ids)
        mask[row, width - len(p.ids) :] = 1
    torch.manual_seed(seed)
    with torch.no_grad():
        out = target.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(eos_ids),
            pad_token_id=pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    answers = out.sequences[:, width:]  # [B, M']
    logits = torch.stack(out.logits, dim=1).float()  # [B, M', V] raw logits: T = 1, no processors
    logp = torch.log_softmax(logits, dim=-1)
    top_logp, top_ids = logp.topk(top_k, dim=-1)
    steps = answers.shape[1]
    ends = torch.full((len(prompts),), steps, dtype=torch.long)
    is_end = torch.isin(answers, torch.tensor(list(eos_ids)))
    for row in range(len(prompts)):
        hits = is_end[row].nonzero()
        if len(hits):
            ends[row] = int(hits[0]) + 1  # the end token is learned too
    tokens, start, length = pack_answers(
        [p.ids for p in prompts], [answers[row, : int(ends[row])].tolist() for row in range(len(prompts))]
    )
    return Shard(tokens, start, length, top_ids, top_logp)


def pack_answers(
    prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, start, length) of a shard: each row its prompt then its answer, right-padded with -1."""
    rows = len(prompts)
    width = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
    tokens = torch.full((rows, width), -1, dtype=torch.long)
    start, length = torch.zeros(rows, dtype=torch.long), torch.zeros(rows, dtype=torch.long)
    for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        tokens[row, : len(prompt) + len(answer)] = torch.tensor([*prompt, *answer], dtype=torch.long)
        start[row], length[row] = len(prompt), len(prompt) + len(answer)
    return tokens, start, length


def save_shard(shard: Shard, path: Path) -> None:
    """Write a shard atomically (safetensors: data only), so an interrupted run never leaves half a shard."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".part")
    save_file(shard.tensors(), str(tmp))
    os.replace(tmp, path)


def load_shard(path: Path) -> Shard:
    from safetensors.torch import load_file

    return Shard(**load_file(str(path)))


def sample_all(
    target: Any,
    prompts: Sequence[TrainingPrompt],
    folder: Path,
    *,
    batch: int,
    max_new_tokens: int,
    top_k: int,
    eos_ids: Sequence[int],
    pad_id: int,
    seed: int,
    progress: Callable[[str], None],
    label: str,
) -> list[Path]:
    """All shards of a prompt list, sampling only those not on disk yet (a rerun resumes where it stopped)."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
    paths = [folder / f"shard-{i:04d}.safetensors" for i in range(len(chunks))]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    if len(todo) < len(chunks):
        progress(f"{label}: {len(chunks) - len(todo)} of {len(chunks)} batches already sampled (resuming)")
    began = time.monotonic()
    for n, i in enumerate(todo, start=1):
        shard = sample_shard(
            target,
            chunks[i],
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            eos_ids=eos_ids,
            pad_id=pad_id,
            seed=seed * 100_003 + i,
        )
        save_shard(shard, paths[i])
        spent = time.monotonic() - began
        answered = int((shard.length - shard.start).sum())
        progress(
            f"{label}: batch {n}/{len(todo)} sampled ({answered} answer tokens), "
            f"{spent:.0f}s so far, ~{spent / n * (len(todo) - n):.0f}s left"
        )
    return paths
