"""The prompts every arm receives: loaded once, rendered with the target's chat template, tokenized once.

The digest of the token ids goes into results.json so anyone can check that all arms (and later runs) saw the
same prompts. Warm-up prompts come from the same dataset but are never measured.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from specplug.core.errors import ConfigError

RANDOM_NAMES = {"random", "random-tokens", "synthetic"}


@dataclass(frozen=True)
class Workload:
    dataset: str
    prompt_ids: list[str]
    prompts: list[list[int]]
    warmup: list[list[int]]
    eos_token_ids: list[int]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.prompts).encode()).hexdigest()[:16]


def build_workload(model_path: Path, dataset: str, num_prompts: int, num_warmup: int = 2) -> Workload:
    if dataset in RANDOM_NAMES:
        raise ConfigError("dataset", dataset, "a real prompt set (random tokens inflate speculative throughput ~23%)")
    if num_prompts < 1:
        raise ConfigError("num_prompts", num_prompts, ">= 1")
    from transformers import AutoTokenizer

    from specplug.core.assets import load_dataset, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    records = load_dataset(dataset, limit=num_prompts + num_warmup)
    if len(records) < num_prompts + num_warmup:
        raise ConfigError(
            "num_prompts", num_prompts, f"at most {len(records) - num_warmup} for {dataset} ({num_warmup} for warm-up)"
        )
    measured, warm = records[:num_prompts], records[num_prompts:]
    eos = {tokenizer.eos_token_id} | {
        tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<end_of_turn>") if t in tokenizer.get_vocab()
    }
    return Workload(
        dataset=dataset,
        prompt_ids=[r.id for r in measured],
        prompts=[render_prompt(r, tokenizer) for r in measured],
        warmup=[render_prompt(r, tokenizer) for r in warm],
        eos_token_ids=sorted(t for t in eos if t is not None),
    )
