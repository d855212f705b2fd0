"""A tiny random Llama built offline: exercises the runner's cache and batching logic in seconds."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(config).eval()
    # Sharper logits: random init is near-uniform, which makes arg-max ties (and repetition) too common.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model
