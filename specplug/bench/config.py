"""Settings of one `specplug bench` invocation: defaults, an optional TOML/JSON grid file, then command-line flags.

Why a file form: larger grids (several datasets, many arms) are easier to review and re-run from a committed
file than from a long command line. The file holds the same keys as the flags (underscores for dashes); a flag
given on the command line overrides the file, so one grid can be re-run with, say, `--num-prompts 4`.

    # grid.toml
    engine = "vllm"
    model = "smollm2-135m"
    datasets = ["mtbench", "bfcl:single_turn"]   # or dataset = "mtbench"; one results folder per dataset
    arms = ["ar", "ngram", "ngram:k=2"]         # or "ar,ngram,ngram:k=2"
    num_prompts = 16
    max_tokens = 64
    concurrency = [1, 4]                         # or "1,4" or 1
    rounds = 1
    out = "results/grid"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10: JSON grid files only
    tomllib = None  # type: ignore[assignment]

from specplug.core.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "engine": "vllm",
    "model": "smollm2-135m",
    "dataset": "mtbench",
    "arms": "ar,ngram",
    "num_prompts": 16,
    "max_tokens": 64,
    "concurrency": "1",
    "rounds": 1,
    "out": "results/bench",
    "arm_timeout": 1800.0,
    "note": None,
    "constrain": "none",
    "temperature": 0.0,
}
# Keys whose value may be a list in a file; it is joined with commas, the flag's own syntax.
LIST_KEYS = ("dataset", "arms", "concurrency")
_TYPES: dict[str, tuple[type, ...]] = {
    "engine": (str,),
    "model": (str,),
    "num_prompts": (int,),
    "max_tokens": (int,),
    "rounds": (int,),
    "out": (str,),
    "arm_timeout": (int, float),
    "note": (str,),
    "constrain": (str,),
    "temperature": (int, float),
}
ALLOWED_KEYS = (*DEFAULTS, "datasets")


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a grid file (.toml, else JSON) and check its keys and value types; values keep the flags' syntax."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", str(path), f"a readable TOML or JSON file ({exc.strerror})") from exc
    is_toml = path.suffix.lower() == ".toml"
    if is_toml and tomllib is None:
        raise ConfigError("config", str(path), "a JSON file (reading TOML needs Python 3.11+)")
    try:
        raw = tomllib.loads(text) if is_toml else json.loads(text)
    except ValueError as exc:  # TOMLDecodeError and JSONDecodeError are both ValueErrors
        raise ConfigError("config", str(path), f"valid {'TOML' if is_toml else 'JSON'}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("config", str(path), "a table/object of settings")
    unknown = sorted(set(raw) - set(ALLOWED_KEYS))
    if unknown:
        raise ConfigError(f"config key(s) in {path}", ", ".join(unknown), "keys " + ", ".join(ALLOWED_KEYS))
    if "dataset" in raw and "datasets" in raw:
        raise ConfigError(f"config key in {path}", "datasets", "either dataset or datasets, not both")
    if "datasets" in raw:
        raw["dataset"] = raw.pop("datasets")
    return {key: _checked(key, value) for key, value in raw.items()}


def _checked(key: str, value: Any) -> Any:
    if key in LIST_KEYS:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in items):
            raise ConfigError(key, value, "a string, an integer, or a non-empty list of them")
        return ",".join(str(v) for v in items)
    if not isinstance(value, _TYPES[key]) or isinstance(value, bool):
        names = " or ".join(t.__name__ for t in _TYPES[key])
        raise ConfigError(key, value, f"a value of type {names}")
    return value


def resolve(cli: dict[str, Any], config_path: str | None) -> dict[str, Any]:
    """Defaults < file < flags. `cli` maps every key to the flag's value, None where the flag was not given."""
    settings = dict(DEFAULTS)
    if config_path:
        settings.update(load_file(config_path))
    settings.update({k: v for k, v in cli.items() if k in DEFAULTS and v is not None})
    return settings


def split_list(text: str) -> list[str]:
    """Comma-separated entries, blanks dropped, order kept, duplicates removed."""
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def integers(key: str, text: str, low: int = 1, count: int | None = None) -> list[int]:
    """Comma-separated whole numbers ≥ `low` (exactly `count` of them when given), in the order given."""
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < low or (count is not None and len(values) != count):
        how_many = f"{count} " if count is not None else ""
        raise ConfigError(key, text, f"{how_many}comma-separated integers >= {low}")
    return values


def at_least(low: int, **values: int) -> None:
    """Refuse, by name, the first of `values` that is not an integer ≥ `low`."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(key, value, f"an integer >= {low}")
