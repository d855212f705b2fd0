"""Arms: named decoding configurations. Syntax on the command line: NAME[:key=value[:key=value…]].

ar                      no speculation
ngram[:k=4:min=2:max=4] prompt-lookup n-gram drafts (vLLM's built-in `ngram`, or core's on the reference engine)
draft_model:model=PATH[:k=4:layers=N:sample=greedy]  a draft model sharing the tokenizer (a path, an asset, or a
                        distilled draft's name: `specplug draft list`); `layers` keeps its first N layers (on vLLM
                        that early-exit draft is written once as a checkpoint); sample=probabilistic drafts from q at
                        the request's temperature (vLLM's draft_sample_method) instead of its argmax
csd[:proposer=ngram|suffix|draft_model:…:lam=6:tau=0.01:memory=FILE:namespace=default]  CSD's calibrated
                        verification over the n-gram, suffix or draft-model proposer (their keys apply); no memory
                        file = a cold memory that learns online; `namespace` picks one memory of a file that holds
                        several; lam=auto takes λ and τ from a memory calibrated with `specplug csd calibrate
                        --min-agreement`, for its budget or `budget=B` (chosen from the same recorded curve), served
                        frozen; tenants=shared learns into the memory itself (what `specplug csd calibrate` does)
                        instead of the tenant "bench" every benchmark request belongs to
toolspec[:k=24:memory=FILE:format=auto:schema=1:retrieval=1:recycling=1:tokens=N]  ToolSpec drafts (schema-forced
                        tokens, retrieval, token recycling; 0 switches a source off); memory = a warm retrieval memory
                        file (`specplug toolspec remember`), none = cold; tokens = memory_tokens_per_tenant (0: its
                        default). Each request's tools come from the dataset.
suffix[:k=24:depth=24:factor=1.0:prob=0.1]  vLLM's built-in suffix decoding (ArcticInference's suffix trees over the
                        prompt and earlier outputs; needs `bash scripts/install-suffix.sh`): k drafts at most, tree
                        depth, max spec factor, min token probability
smc[:n=4:k=3:model=smollm2-135m:layers=20:dt=0.7:threshold=0.5]  SMC-SD: n particles, γ=k draft tokens per cycle from
                        `model` (its first `layers` layers; 0 = all) at draft temperature dt, ESS resampling threshold
spec:method=NAME[:k=N:key=value…]  any other `--speculative-config` of the engine, passed through as given
                        (`k` is num_speculative_tokens), e.g. spec:method=eagle:model=PATH:k=3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specplug.core.errors import ConfigError

# Per arm kind: accepted keys and their defaults (None = required).
ARM_KINDS: dict[str, dict[str, Any]] = {
    "ar": {},
    "ngram": {"k": 4, "min": 2, "max": 4},
    "draft_model": {"model": None, "k": 4, "layers": None, "sample": "greedy"},
    "csd": {
        "proposer": "ngram",
        "k": 6,
        "min": 2,
        "max": 4,
        "model": "",
        "layers": None,
        "depth": 24,
        "factor": 1.0,
        "prob": 0.1,
        "lam": 6,
        "tau": 0.01,
        "memory": "",
        "namespace": "default",
        "budget": "",  # "" = the budget the memory was calibrated for
        "tenants": "separate",  # as served; bench requests are all the operator-named tenant "bench"
    },
    "toolspec": {"k": 24, "memory": "", "format": "auto", "schema": 1, "retrieval": 1, "recycling": 1, "tokens": 0},
    "suffix": {"k": 24, "depth": 24, "factor": 1.0, "prob": 0.1},
    "smc": {"n": 4, "k": 3, "model": "smollm2-135m", "layers": 20, "dt": 0.7, "threshold": 0.5},
    "spec": {"method": None},  # free-form: every other key is passed through to the engine's speculative config
}
FREE_FORM_KINDS = {"spec"}
CSD_PROPOSERS = ("ngram", "suffix", "draft_model")
# vLLM's draft_sample_method: `greedy` drafts the argmax (q one-hot), `probabilistic` samples q at the request's
# temperature and verifies with the full draft distribution (what a sampled workload wants).
DRAFT_SAMPLING = ("greedy", "probabilistic")


@dataclass(frozen=True)
class Arm:
    label: str  # as given, unique within a run
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def speculative(self) -> bool:
        return self.kind != "ar"

    @property
    def verifies(self) -> bool:
        """A specplug verifier judges this arm's drafts (its rescued tokens are counted)."""
        return self.kind == "csd"


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
        if not sep or (key not in ARM_KINDS[kind] and kind not in FREE_FORM_KINDS):
            raise ConfigError("arm", spec, f"settings of {kind}: {', '.join(ARM_KINDS[kind]) or 'none'}")
        options[key] = _value(raw)
    missing = [k for k, v in options.items() if v is None and ARM_KINDS[kind].get(k, 0) is None and k != "layers"]
    if missing:
        raise ConfigError("arm", spec, f"{kind} needs {', '.join(f'{m}=…' for m in missing)}")
    arm = Arm(label=spec.strip(), kind=kind, options=options)
    if kind == "draft_model" and options["sample"] not in DRAFT_SAMPLING:
        raise ConfigError("arm", spec, f"draft_model sample= one of {', '.join(DRAFT_SAMPLING)}")
    if kind == "smc":
        from specplug.core.smc.config import SMCConfig

        if not isinstance(options["layers"], int) or options["layers"] < 0:
            raise ConfigError("arm", spec, "smc layers= an integer >= 0 (0 = the whole draft model)")
        SMCConfig.from_mapping(smc_settings(arm) | {"gamma": options["k"]})  # bad values fail before any engine
    if kind == "csd":
        if options["proposer"] not in CSD_PROPOSERS:
            raise ConfigError("arm", spec, f"csd proposer= one of {', '.join(CSD_PROPOSERS)}")
        if options["proposer"] == "draft_model" and not options["model"]:
            raise ConfigError("arm", spec, "csd with proposer=draft_model needs model=…")
        from specplug.core.csd.config import CSDConfig

        CSDConfig.from_mapping(csd_settings(arm))  # bad λ/τ fail here, before any engine starts
    if kind == "toolspec":
        from specplug.core.toolspec.config import ToolSpecConfig

        ToolSpecConfig.from_mapping(toolspec_settings(arm))  # bad values fail here, before any engine starts
    return arm


def proposer_arm(arm: Arm) -> Arm:
    """The proposer a CSD or SMC-SD arm verifies, as the plain arm the engines already know how to build."""
    o = arm.options
    if arm.kind == "smc":
        layers = {"layers": o["layers"]} if o["layers"] else {"layers": None}
        return Arm(label=arm.label, kind="draft_model", options={"model": o["model"], "k": o["k"], **layers})
    if arm.kind != "csd":
        return arm
    keys = ARM_KINDS[o["proposer"]]
    return Arm(label=arm.label, kind=o["proposer"], options={k: o[k] for k in keys if k in o})  # CSD: greedy drafts


def csd_settings(arm: Arm) -> dict[str, Any]:
    """CSD's own settings of a csd arm (the engine-neutral CSDConfig keys). lam=auto is passed on as users serve
    it: the core chooses λ and τ from the memory's calibration curve for `budget` (default: the calibrated one)."""
    o = arm.options
    lam = o["lam"]
    settings: dict[str, Any] = {
        "lam": "inf" if str(lam).lower() in {"inf", "infinity"} else lam,
        "memory_path": o["memory"] or None,
        "namespace": o["namespace"],
        "tenants": o["tenants"],
    }
    if str(lam).lower() == "auto":
        if o["budget"] != "":
            settings["min_agreement"] = o["budget"]
    else:
        settings["tau"] = o["tau"]
        if o["budget"] != "":
            raise ConfigError("arm", arm.label, "budget= only with lam=auto")
    return settings


def smc_settings(arm: Arm) -> dict[str, Any]:
    """SMC-SD's own settings of an smc arm (the engine-neutral SMCConfig keys; γ is the draft's k)."""
    o = arm.options
    return {"num_particles": o["n"], "draft_temperature": o["dt"], "resample_threshold": o["threshold"]}


def toolspec_settings(arm: Arm) -> dict[str, Any]:
    """ToolSpec's own settings of a toolspec arm (the engine-neutral ToolSpecConfig keys)."""
    o = arm.options
    flags = {}
    for key in ("schema", "retrieval", "recycling"):
        if o[key] not in (0, 1):
            raise ConfigError("arm", arm.label, f"toolspec {key}= 0 or 1")
        flags[f"use_{key}"] = bool(o[key])
    return {
        "num_speculative_tokens": o["k"],
        "tool_format": o["format"],
        "memory_path": o["memory"] or None,
        **flags,
        **({"memory_tokens_per_tenant": o["tokens"]} if o["tokens"] else {}),
    }


def parse_arms(text: str) -> list[Arm]:
    arms = [parse_arm(s) for s in text.split(",") if s.strip()]
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise ConfigError("arms", text, "distinct arms")
    if not arms:
        raise ConfigError("arms", text, "at least one arm")
    return arms
