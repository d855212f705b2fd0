"""Chat-template pre-tokenization, including the tools-in-system-prompt style for templates without tool support.

Uses a byte-level tokenizer built offline (no model files), so these tests stay fast and network-free.
"""

from __future__ import annotations

import json

import pytest

from specplug.assets.datasets import PromptRecord
from specplug.assets.models import GEMMA3_CHAT_TEMPLATE
from specplug.assets.prompts import (
    EXAMPLE_CALL,
    EXAMPLE_USER,
    render_prompt,
    render_text,
    supports_tools,
    system_prompt_messages,
)

# SmolLM2's template, as stored in its GGUF: plain ChatML with a default system prompt and no tool support.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NATIVE = (
    "{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_forecast",
        "description": "Forecast for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<|im_end|>", unk_token="<unk>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<start_of_turn>", "<end_of_turn>"]})
    tok.chat_template = CHATML
    return tok


def _with_template(tokenizer, template: str):
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, **tokenizer.special_tokens_map)
    tok.chat_template = template
    return tok


def test_plain_prompt_matches_the_chat_template(tokenizer) -> None:
    record = PromptRecord("1", "t", "c", [{"role": "user", "content": "What is the capital of France?"}])
    ids = render_prompt(record, tokenizer)
    expected = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(ids) == expected
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>"), "special tokens map to their own ids"
    assert ids == list(tokenizer.apply_chat_template(record.messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"])  # fmt: skip


def test_tools_without_template_support_go_to_the_system_prompt_with_one_example(tokenizer) -> None:
    assert not supports_tools(tokenizer)
    record = PromptRecord(
        "1",
        "t",
        "c",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo tomorrow?"}],
        tools=[WEATHER],
    )
    text = tokenizer.decode(render_prompt(record, tokenizer))
    turns = text.split("<|im_start|>")[1:]
    assert [t.split("\n", 1)[0] for t in turns] == ["system", "user", "assistant", "user", "assistant"]
    system = turns[0]
    assert system.startswith("system\nBe brief.\n\n"), "the record's own system text comes first"
    assert "<tools>\n" + json.dumps(WEATHER) + "\n</tools>" in system
    assert EXAMPLE_USER in turns[1]
    example_call = (
        '<tool_call>{"name": "get_current_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>'
    )
    assert turns[2] == "assistant\n" + example_call + "<|im_end|>\n"
    assert json.loads(example_call.removeprefix("<tool_call>").removesuffix("</tool_call>")) == EXAMPLE_CALL
    assert turns[3] == "user\nWeather in Oslo tomorrow?<|im_end|>\n"
    assert turns[4] == "assistant\n", "ends with the generation prompt"


def test_native_tool_templates_get_the_tools_list(tokenizer) -> None:
    native = _with_template(tokenizer, NATIVE)
    assert supports_tools(native)
    record = PromptRecord("1", "t", "c", [{"role": "user", "content": "Weather?"}], tools=[WEATHER])
    text = render_text(record, native)
    assert text.startswith("TOOLS:") and "get_forecast" in text
    assert EXAMPLE_USER not in text
    assert text.endswith("[user] Weather?\n[assistant] ")
    forced = render_text(record, native, tool_style="system_prompt")
    assert EXAMPLE_USER in forced and not forced.startswith("TOOLS:")
    with pytest.raises(ValueError, match="tool_style"):
        render_text(record, native, tool_style="xml")  # type: ignore[arg-type]


def test_tool_history_is_flattened_into_alternating_turns_for_gemma(tokenizer) -> None:
    gemma = _with_template(tokenizer, GEMMA3_CHAT_TEMPLATE)
    messages = [
        {"role": "system", "content": "User data."},
        {"role": "user", "content": "Set an alarm at 6:30."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c0", "type": "function", "function": {"name": "AddAlarm", "arguments": '{"time": "06:30:00"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c0", "content": '{"response": {"alarm_id": "1"}, "exception": null}'},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "Thanks!"},
        {"role": "user", "content": "Also at 7?"},
    ]
    flat = system_prompt_messages(messages, None)
    assert [m["role"] for m in flat] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert flat[2]["content"] == '<tool_call>{"name": "AddAlarm", "arguments": {"time": "06:30:00"}}</tool_call>'
    assert flat[3]["content"].startswith("<tool_response>{") and flat[5]["content"] == "Thanks!\n\nAlso at 7?"

    record = PromptRecord("1", "tooltalk", "easy", messages, tools=[WEATHER])
    text = tokenizer.decode(render_prompt(record, gemma))
    assert text.startswith("<bos><start_of_turn>user\nUser data.\n\n")  # Gemma folds the system text into turn 1
    assert text.count("<start_of_turn>model\n") == 4  # example answer, tool call, "Done.", generation prompt
    assert text.endswith("Also at 7?<end_of_turn>\n<start_of_turn>model\n")
