"""Which (target, draft, tokenizer) a learned memory belongs to.

A memory counted on one pair says nothing about another: CSD's correction pairs are token ids judged by one target
against one drafter, read through one tokenizer. Calibration records the pair's identity in the memory file;
serving computes the engine's and refuses a memory recorded for another pair.

Identities are fingerprints of what decides behaviour and can be read in a second at startup: the model config's
architecture fields (not its path, so a moved or renamed checkpoint still matches) and the tokenizer's whole
vocabulary. Not told apart: two checkpoints with the same architecture and tokenizer but other weights (a
fine-tune of the same base) — the recorded names say which model a memory came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Config fields that define a causal LM's shape (HF names); a missing one is recorded as None.
ARCHITECTURE_KEYS = (
    "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rope_theta", "tie_word_embeddings",
)  # fmt: skip


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_fingerprint(config: Mapping[str, Any]) -> str:
    return _digest({key: config.get(key) for key in ARCHITECTURE_KEYS})


def vocab_fingerprint(vocab: Mapping[str, int]) -> str:
    return _digest(sorted(vocab.items(), key=lambda item: item[1]))


def describe(config: Mapping[str, Any] | None) -> str:
    if not config:
        return "—"
    name = config.get("_name_or_path") or "model"
    arch = (config.get("architectures") or ["?"])[0]
    return f"{str(name).rstrip('/').rsplit('/', 1)[-1]} ({arch}, {config.get('num_hidden_layers')} layers)"


def pair_identity(
    target_config: Mapping[str, Any],
    vocab: Mapping[str, int],
    draft_method: str,
    draft_config: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The identity recorded in a memory file: fingerprints to compare, and names to tell a person."""
    draft = draft_method + (f":{config_fingerprint(draft_config)}" if draft_config else "")
    return {
        "target": config_fingerprint(target_config),
        "tokenizer": vocab_fingerprint(vocab),
        "draft": draft,
        "about": f"target {describe(target_config)}, draft {draft_method}"
        + (f" {describe(draft_config)}" if draft_config else ""),
    }


def mismatch(recorded: Mapping[str, Any], actual: Mapping[str, Any]) -> str | None:
    """Why a memory recorded for `recorded` does not fit the engine's `actual` pair, or None when it fits."""
    differ = [part for part in ("target", "draft", "tokenizer") if recorded.get(part) != actual.get(part)]
    if not differ:
        return None
    return (
        f"calibrated for another {', '.join(differ)} ({recorded.get('about', 'unnamed pair')}; this engine runs "
        f"{actual.get('about', 'another pair')}): recalibrate with `specplug csd calibrate` for this pair"
    )


def model_config_dict(path: Any) -> dict[str, Any]:
    """A checkpoint's config as a dict (transformers' reading of config.json, defaults included)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path)).to_dict()
    config.setdefault("_name_or_path", str(path))
    return config


def tokenizer_vocab(path: Any, **kwargs: Any) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), **kwargs).get_vocab()
