"""The prompts every arm receives: loaded once, rendered with the target's chat template, tokenized once.

The digest of the token ids goes into results.json so anyone can check that all arms (and later runs) saw the
same prompts. Warm-up prompts come from the same dataset but are never measured.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specplug.bench.config import at_least
from specplug.core.errors import ConfigError

RANDOM_NAMES = {"random", "random-tokens", "synthetic"}


@dataclass(frozen=True)
class Workload:
    dataset: str
    prompt_ids: list[str]
    prompts: list[list[int]]
    warmup: list[list[int]]
    eos_token_ids: list[int]
    records: list[Any] = field(default_factory=list)  # the measured PromptRecords, for the accuracy scorers
    tokenizer_path: str | None = None  # to decode outputs the same way for every arm
    rendering: str = "the model's chat template"  # how prompts were rendered; reports must say it
    tools: list[Any] = field(default_factory=list)  # per measured prompt: its OpenAI tools (None without)
    warmup_tools: list[Any] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.prompts).encode()).hexdigest()[:16]


def split_dataset(dataset: str) -> tuple[str, str | None]:
    """`NAME:PART` -> (NAME, PART) for a known dataset, where PART is a split or a category (bfcl:single_turn,
    bfcl:simple_python, tooltalk:easy); a file path or a plain name is returned unchanged."""
    from specplug.assets import DATASETS

    name, sep, part = dataset.partition(":")
    if sep and name in DATASETS and not Path(dataset).expanduser().exists():
        return name, part
    return dataset, None


def _load(dataset: str, limit: int) -> list:
    from specplug.assets import DATASETS, load_dataset

    name, part = split_dataset(dataset)
    if part is None:
        return load_dataset(name, limit=limit)
    if part in DATASETS[name].splits:
        return load_dataset(name, split=part, limit=limit)
    return load_dataset(name, category=part, limit=limit)


def build_workload(model_path: Path, dataset: str, num_prompts: int, num_warmup: int = 2, skip: int = 0) -> Workload:
    """The first `num_prompts` records after `skip` (measured), then `num_warmup` more for warm-up."""
    if dataset in RANDOM_NAMES:
        raise ConfigError("dataset", dataset, "a real prompt set (random tokens inflate speculative throughput ~23%)")
    at_least(1, num_prompts=num_prompts)
    from transformers import AutoTokenizer

    from specplug.assets import AssetError, render_prompt, supports_tools

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    try:
        records = _load(dataset, skip + num_prompts + num_warmup)[skip:]
    except AssetError as exc:
        raise ConfigError("dataset", dataset, str(exc)) from exc
    if len(records) < num_prompts + num_warmup:
        raise ConfigError(
            "num_prompts",
            num_prompts,
            f"at most {len(records) - num_warmup} for {dataset} after skipping {skip} ({num_warmup} for warm-up)",
        )
    measured, warm = records[:num_prompts], records[num_prompts:]
    eos = {tokenizer.eos_token_id} | {
        tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<end_of_turn>") if t in tokenizer.get_vocab()
    }
    rendering = "the model's chat template"
    if any(r.tools for r in records) and not supports_tools(tokenizer):
        rendering = (
            "the model's chat template, with tools written into the system prompt followed by one worked "
            "<tool_call> example (the template has no tool support)"
        )
    return Workload(
        dataset=dataset,
        prompt_ids=[r.id for r in measured],
        prompts=[render_prompt(r, tokenizer) for r in measured],
        warmup=[render_prompt(r, tokenizer) for r in warm],
        eos_token_ids=sorted(t for t in eos if t is not None),
        records=measured,
        tokenizer_path=str(model_path),
        rendering=rendering,
        tools=[r.tools or None for r in measured],
        warmup_tools=[r.tools or None for r in warm],
    )


def add_memory_slice_arguments(parser: Any, *, dataset: str, num_prompts: int, skip: int) -> None:
    """The engine, model and prompt-slice options shared by the commands that build a memory file."""
    parser.add_argument("--engine", choices=("vllm", "reference"), default="vllm")
    parser.add_argument("--model", default="smollm2-135m", help="target model asset or checkpoint directory")
    parser.add_argument("--dataset", default=dataset, help="dataset (as for `specplug bench`)")
    parser.add_argument("--num-prompts", type=int, default=num_prompts)
    parser.add_argument(
        "--skip", type=int, default=skip, help="skip the dataset's first N prompts (keep them for benches)"
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", required=True, help="memory file to write (JSON, checksummed, written atomically)")
    parser.add_argument("--arm-timeout", type=float, default=3600.0)


def memory_slice(model: str, dataset: str, num_prompts: int, skip: int, concurrency: int, max_tokens: int):
    """(model path, workload) of the prompt slice a memory is built from (`specplug csd calibrate`,
    `specplug toolspec remember`): after `skip` prompts, so benches can measure the first ones."""
    at_least(1, num_prompts=num_prompts, concurrency=concurrency, max_tokens=max_tokens)
    at_least(0, skip=skip)
    from specplug.assets import resolve_model

    model_path = resolve_model(model)
    return model_path, build_workload(model_path, dataset, num_prompts, skip=skip)
