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


def early_exit_checkpoint(source: str | Path, num_layers: int) -> Path:
    """A checkpoint directory holding the first `num_layers` layers of `source` (plus its embeddings, final norm,
    head and tokenizer), for engines that load a draft model from disk. Built once, cached beside the assets.

    What it is, honestly: the target's own early layers, untrained as a drafter — it shares the tokenizer and
    costs num_layers/total of a target forward.
    """
    import shutil

    from specplug.assets.cache import cache_dir

    source = Path(source)
    out = cache_dir() / "derived" / f"{source.name}-first{num_layers}"
    if (out / "config.json").is_file():
        return out
    model = load_causal_lm(source, num_layers=num_layers)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    for item in source.iterdir():  # tokenizer and chat template files
        if item.is_file() and ("token" in item.name or item.name.endswith(".jinja") or "special" in item.name):
            shutil.copy2(item, tmp / item.name)
    tmp.rename(out)
    return out
