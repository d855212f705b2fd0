"""Load a causal LM for the reference runner (CPU, eager attention-independent, fp32 by default)."""

from __future__ import annotations

from pathlib import Path

import torch


def load_causal_lm(path: str | Path, *, dtype: torch.dtype = torch.float32, num_layers: int | None = None):
    """Load a Hugging Face causal LM from a local directory.

    `num_layers` keeps only the first layers (an early-exit self-draft: a genuinely cheaper drafter that shares
    the target's tokenizer, for models that have no smaller sibling).
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    if num_layers is not None:
        total = model.config.num_hidden_layers
        if not 1 <= num_layers <= total:
            raise ValueError(f"num_layers={num_layers} must be within 1..{total} for {path}")
        model.model.layers = model.model.layers[:num_layers]
        model.config.num_hidden_layers = num_layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:num_layers]
    return model.eval()
