#!/usr/bin/env python3
"""GPU smoke test of ToolSpec on TensorRT-LLM — UNVERIFIED: written on a machine without a GPU or TensorRT-LLM,
never run. The adapter it exercises is tested only against stand-ins of TensorRT-LLM's interface
(tests/plugins/trtllm_toolspec); this script is the first thing to run on a real install.

Needs a CUDA machine with TensorRT-LLM and its PyTorch backend (an NGC container such as
nvcr.io/nvidia/tensorrt-llm/release, or NVIDIA's package index; PyPI only has a stub), specplug installed in the
same environment (`pip install -e .` from this repository, keeping the container's torch), and a small local model
directory with a tokenizer and chat template (e.g. Qwen2.5-0.5B-Instruct or SmolLM2-135M-Instruct).

Greedy decoding (top_k=1), the same tool-call prompts and max_tokens in every run:
1. `LLM(model)` without speculative decoding: the reference outputs.
2. `LLM(model, speculative_config=make_speculative_config(model, tools=...))`, run `--rounds` times over the
   prompts in the same LLM (later rounds can draft from the answers of earlier ones: ToolSpec's memory). Every
   round's token ids must equal run 1's exactly: ToolSpec only drafts, TensorRT-LLM verifies by token match.
Reports wall time per run, acceptance per round from TensorRT-LLM's per-request perf metrics where it exposes them
(`return_perf_metrics=True`; field names unverified, reported as null when absent), and whether the pool saved
its memory at shutdown (which shows that TensorRT-LLM called the resource manager's `shutdown` in its worker).

    python scripts/gpu/trtllm_toolspec_smoke.py --model /models/Qwen2.5-0.5B-Instruct
    python scripts/gpu/trtllm_toolspec_smoke.py --model /models/smollm2 --tools tools.json --rounds 3 \\
        --llm-args '{"disable_overlap_scheduler": true, "max_batch_size": 8}'

Prints a JSON report; exits 1 when any speculative output differs from the reference, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "city name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_trip",
            "description": "Book a train trip",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string"},
                    "destination": {"type": "string"},
                    "date": {"type": "string", "description": "YYYY-MM-DD"},
                },
                "required": ["origin", "destination", "date"],
            },
        },
    },
]
QUESTIONS = [
    "What is the weather in Paris right now, in celsius?",
    "How warm is it in Chicago? Use fahrenheit.",
    "Book me a train from Oslo to Rome on 2025-05-01.",
    "Is it raining in Tokyo? Answer in celsius.",
    "I need a trip from Berlin to Vienna on 2025-06-12.",
    "Weather for Lyon, please, in celsius.",
    "Book a trip from Rome to Oslo on 2025-05-09.",
    "What's the temperature in Denver in fahrenheit?",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="local model directory (tokenizer with a chat template)")
    parser.add_argument("--tools", help="JSON file with the OpenAI tools list (default: weather and booking tools)")
    parser.add_argument("--num-prompts", type=int, default=len(QUESTIONS))
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--num-speculative-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the prompts with ToolSpec (>= 1)")
    parser.add_argument("--llm-args", default="{}", help="extra LLM(...) keyword arguments (JSON object)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.num_prompts < 1 or args.max_tokens < 1:
        parser.error("--rounds, --num-prompts and --max-tokens must be positive")
    try:
        args.llm_kwargs = json.loads(args.llm_args)
        args.tools_list = json.loads(Path(args.tools).read_text()) if args.tools else TOOLS
    except (OSError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    if not isinstance(args.llm_kwargs, dict) or not isinstance(args.tools_list, list):
        parser.error("--llm-args must be a JSON object and --tools a JSON list")
    return args


def prompts(model: str, tools: list[dict[str, Any]], count: int) -> list[list[int]]:
    """Chat-templated prompt token ids (tools in the template, or in the system prompt if it has no tool support)."""
    from transformers import AutoTokenizer

    from specplug.assets.datasets import PromptRecord
    from specplug.assets.prompts import render_text

    tokenizer = AutoTokenizer.from_pretrained(model)
    out = []
    for index in range(count):
        question = QUESTIONS[index % len(QUESTIONS)]
        record = PromptRecord(f"smoke-{index}", "smoke", "tools", [{"role": "user", "content": question}], tools)
        out.append(list(tokenizer(render_text(record, tokenizer), add_special_tokens=False)["input_ids"]))
    return out


def _metric(output: Any, *names: str) -> Any:
    """A nested attribute of TensorRT-LLM's per-request perf metrics, or None (names unverified)."""
    value = getattr(output, "request_perf_metrics", None)
    for name in names:
        value = getattr(value, name, None)
    return value


def generate(llm: Any, token_prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], dict[str, Any]]:
    from tensorrt_llm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, top_k=1, return_perf_metrics=True)
    start = time.perf_counter()
    results = llm.generate([{"prompt_token_ids": p} for p in token_prompts], params)
    seconds = time.perf_counter() - start
    outputs = [list(r.outputs[0].token_ids) for r in results]
    drafted = [_metric(r.outputs[0], "speculative_decoding", "total_draft_tokens") for r in results]
    accepted = [_metric(r.outputs[0], "speculative_decoding", "total_accepted_draft_tokens") for r in results]
    known = all(isinstance(v, int) for v in drafted + accepted)
    stats = {
        "seconds": round(seconds, 3),
        "output_tokens": sum(len(o) for o in outputs),
        "draft_tokens": sum(drafted) if known else None,
        "accepted_draft_tokens": sum(accepted) if known else None,
        "acceptance_rate": (sum(accepted) / sum(drafted)) if known and sum(drafted) else None,
    }
    return outputs, stats


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tensorrt_llm import LLM

    from specplug.plugins.trtllm_toolspec import make_speculative_config

    token_prompts = prompts(args.model, args.tools_list, args.num_prompts)
    report: dict[str, Any] = {"model": args.model, "prompts": len(token_prompts), "max_tokens": args.max_tokens}

    llm = LLM(model=args.model, **args.llm_kwargs)
    try:
        reference, report["reference"] = generate(llm, token_prompts, args.max_tokens)
    finally:
        llm.shutdown()

    memory = Path(tempfile.mkdtemp(prefix="toolspec-smoke-")) / "memory.json"
    spec = make_speculative_config(
        args.model,
        tools=args.tools_list,
        num_speculative_tokens=args.num_speculative_tokens,
        save_path=str(memory),
    )
    llm = LLM(model=args.model, speculative_config=spec, **args.llm_kwargs)
    report["toolspec"] = []
    mismatches = []
    try:
        for round_index in range(args.rounds):
            outputs, stats = generate(llm, token_prompts, args.max_tokens)
            differ = [i for i, (a, b) in enumerate(zip(outputs, reference, strict=True)) if a != b]
            stats["outputs_identical"] = not differ
            stats["differing_prompts"] = differ
            report["toolspec"].append(stats)
            mismatches += [(round_index, i) for i in differ]
    finally:
        llm.shutdown()
    report["memory_saved_at_shutdown"] = memory.is_file()
    report["memory_file"] = str(memory)
    report["verdict"] = "identical to greedy without ToolSpec" if not mismatches else "OUTPUTS DIFFER"
    print(json.dumps(report, indent=2))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
