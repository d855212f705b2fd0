"""Arms: named decoding configurations. Syntax on the command line: NAME[:key=value[:key=value…]].

ar                      no speculation
ngram[:k=4:min=2:max=4] prompt-lookup n-gram drafts (vLLM's built-in `ngram`, or core's on the reference engine)
draft_model:model=PATH[:k=4:layers=N]  a draft model sharing the tokenizer (`layers` keeps its first N layers,
                        reference engine only)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specplug.core.errors import ConfigError

# Per arm kind: accepted keys and their defaults (None = required).
ARM_KINDS: dict[str, dict[str, Any]] = {
    "ar": {},
    "ngram": {"k": 4, "min": 2, "max": 4},
    "draft_model": {"model": None, "k": 4, "layers": None},
}


@dataclass(frozen=True)
class Arm:
    label: str  # as given, unique within a run
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def speculative(self) -> bool:
        return self.kind != "ar"


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_arm(spec: str) -> Arm:
    kind, *pairs = spec.strip().split(":")
    if kind not in ARM_KINDS:
        raise ConfigError("arm", spec, f"one of {', '.join(ARM_KINDS)} (with optional :key=value settings)")
    options = dict(ARM_KINDS[kind])
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in ARM_KINDS[kind]:
            raise ConfigError("arm", spec, f"settings of {kind}: {', '.join(ARM_KINDS[kind]) or 'none'}")
        options[key] = _value(raw)
    missing = [k for k, v in options.items() if v is None and ARM_KINDS[kind][k] is None and k != "layers"]
    if missing:
        raise ConfigError("arm", spec, f"{kind} needs {', '.join(f'{m}=…' for m in missing)}")
    return Arm(label=spec.strip(), kind=kind, options=options)


def parse_arms(text: str) -> list[Arm]:
    arms = [parse_arm(s) for s in text.split(",") if s.strip()]
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise ConfigError("arms", text, "distinct arms")
    if not arms:
        raise ConfigError("arms", text, "at least one arm")
    return arms
