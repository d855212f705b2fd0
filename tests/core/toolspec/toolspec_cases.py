"""Tokenizers for the ToolSpec tests: SmolLM2 (GPT-2 style byte-level BPE, 49k), Gemma 3 (SentencePiece-style
BPE with byte fallback, 262k) and a small byte-level BPE trained here (few merges: tags and keys split into many
pieces), so forced-token checks cover very different token boundaries."""

from __future__ import annotations

CORPUS = [
    'I will call a function. <tool_call>{"name": "lookup", "arguments": {"query": "x"}}</tool_call>',
    "The weather in Paris is mild; the time zone is UTC. Numbers: 1, 2, 3.",
] * 20

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather now",
            "parameters": {
                "type": "dict",
                "properties": {
                    "city": {"type": "string", "description": "city name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "dict", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_trip",
            "parameters": {
                "type": "dict",
                "properties": {
                    "route": {
                        "type": "dict",
                        "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                        "required": ["from", "to"],
                    },
                    "seats": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["route", "seats"],
            },
        },
    },
]


def _trained_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")


_CACHE: dict[str, object] = {}


def load_tokenizer(name: str):
    if name not in _CACHE:
        if name == "tiny-bpe":
            _CACHE[name] = _trained_bpe()
        else:
            from transformers import AutoTokenizer

            from specplug.assets import resolve_model

            _CACHE[name] = AutoTokenizer.from_pretrained(str(resolve_model(name)))
    return _CACHE[name]
