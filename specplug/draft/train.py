"""The draft model, its objective, a resumable training loop, and the figures a user judges a draft by.

The draft is the target's architecture cut to a few layers, initialised from chosen target layers, with the
target's own embeddings, final norm and (tied) LM head kept frozen: the output space stays the target's, and only
the few layers (~3.5M parameters each for SmolLM2-135M) learn, which 2 CPU cores can fit in minutes.

Objectives (both mass-covering — the draft must not miss tokens the target likes, or SMC-SD's weights p/q and
rejection sampling's min(1, p/q) blow up; a mode-seeking reverse KL would be wrong here):
    kl    forward KL(p ‖ q) over the target's top-K tokens plus one "rest" bucket (the usual distillation loss)
    chi2  Rényi-2, log Σ p²/q over the same buckets: the log of 1 + χ²(p ‖ q), the second moment of the
          importance weight p/q that SMC-SD's effective sample size depends on (the SMC-SD authors' choice)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from specplug.draft.samples import Shard, load_shard

OBJECTIVES = ("kl", "chi2")


def make_draft(target: Any, init_layers: Sequence[int]) -> Any:
    """A copy of the target with only `init_layers` (in that order); embeddings, norm and head frozen."""
    import copy

    total = target.config.num_hidden_layers
    bad = [i for i in init_layers if not 0 <= i < total]
    if bad or not init_layers:
        raise ValueError(f"init layers must be 1+ indices within 0..{total - 1}, got {list(init_layers)}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = len(init_layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [target.config.layer_types[i] for i in init_layers]
    draft = type(target)(config)
    draft.load_state_dict(_draft_state(target, init_layers), strict=True)
    for name, param in draft.named_parameters():
        param.requires_grad = name.startswith("model.layers.")
    return draft


def _draft_state(target: Any, init_layers: Sequence[int]) -> dict[str, torch.Tensor]:
    state = {}
    for name, value in target.state_dict().items():
        if name.startswith("model.layers."):
            index, rest = name[len("model.layers.") :].split(".", 1)
            if int(index) in init_layers:
                state[f"model.layers.{list(init_layers).index(int(index))}.{rest}"] = value.clone()
        else:
            state[name] = value.clone()
    return state


def bucket_divergence(
    logq: torch.Tensor, top_ids: torch.Tensor, top_logp: torch.Tensor, objective: str
) -> torch.Tensor:
    """Per-position divergence of the draft's log-probs `logq` [P, V] from the target's top-K + rest buckets."""
    logq_top = logq.gather(-1, top_ids)  # [P, K]
    p_top = top_logp.exp()
    p_rest = (1.0 - p_top.sum(-1)).clamp_min(0.0)
    logq_rest = torch.log1p(-torch.logsumexp(logq_top, -1).exp().clamp(max=1.0 - 1e-6))
    if objective == "kl":
        rest = torch.where(p_rest > 0, p_rest * (torch.log(p_rest.clamp_min(1e-30)) - logq_rest), 0.0)
        return (p_top * (top_logp - logq_top)).sum(-1) + rest
    if objective == "chi2":
        terms = torch.cat([2 * top_logp - logq_top, (2 * torch.log(p_rest.clamp_min(1e-30)) - logq_rest)[:, None]], -1)
        return torch.logsumexp(terms, -1)
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")


def answer_positions(shard: Shard) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, position predicting answer token m, m) for every answer token of a shard."""
    rows, cols, steps = [], [], []
    for row in range(shard.tokens.shape[0]):
        start, length = int(shard.start[row]), int(shard.length[row])
        m = torch.arange(length - start)
        rows.append(torch.full_like(m, row))
        cols.append(start - 1 + m)
        steps.append(m)
    return torch.cat(rows), torch.cat(cols), torch.cat(steps)


def shard_logits(model: Any, shard: Shard, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The model's logits at the given (row, position) pairs, the LM head run only there."""
    tokens = shard.tokens.clamp_min(0)
    mask = (shard.tokens >= 0).long()
    hidden = model.model(input_ids=tokens, attention_mask=mask).last_hidden_state
    return model.lm_head(hidden[rows, cols])


def shard_loss(draft: Any, shard: Shard, objective: str) -> tuple[torch.Tensor, int]:
    rows, cols, steps = answer_positions(shard)
    logq = torch.log_softmax(shard_logits(draft, shard, rows, cols).float(), -1)
    div = bucket_divergence(logq, shard.top_ids[rows, steps], shard.top_logp[rows, steps], objective)
    return div.mean(), len(rows)


@dataclass(frozen=True)
class TrainSettings:
    objective: str
    epochs: int
    lr: float
    seed: int
    checkpoint_every_s: float = 60.0


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save_state(folder: Path, draft: Any, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Trainable weights and Adam moments as safetensors (data only), then the JSON that names its checksum."""
    from safetensors.torch import save_file

    tensors = {f"w/{n}": p.detach().contiguous() for n, p in draft.named_parameters() if p.requires_grad}
    names = {id(p): n for n, p in draft.named_parameters()}
    for param, state in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            tensors[f"adam/{key}/{names[id(param)]}"] = state[key].contiguous()
    tmp = folder / "train-state.safetensors.part"
    save_file(tensors, str(tmp))
    sha = _file_sha(tmp)
    os.replace(tmp, folder / "train-state.safetensors")
    tmp_meta = folder / "train-state.json.part"
    tmp_meta.write_text(json.dumps({**meta, "sha256": sha}, indent=1))
    os.replace(tmp_meta, folder / "train-state.json")


def _load_state(folder: Path, draft: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """The saved training state if it is complete and its checksum holds; None starts from scratch."""
    from safetensors.torch import load_file

    meta_path, state_path = folder / "train-state.json", folder / "train-state.safetensors"
    if not (meta_path.is_file() and state_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("sha256") != _file_sha(state_path):
        return None
    tensors = load_file(str(state_path))
    params = dict(draft.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("w/"):
                params[key[2:]].copy_(value)
    for name, param in params.items():
        if param.requires_grad and f"adam/exp_avg/{name}" in tensors:
            optimizer.state[param] = {
                "step": torch.tensor(float(meta["optimizer_steps"])),
                "exp_avg": tensors[f"adam/exp_avg/{name}"],
                "exp_avg_sq": tensors[f"adam/exp_avg_sq/{name}"],
            }
    return meta


def train(
    draft: Any,
    shard_paths: Sequence[Path],
    settings: TrainSettings,
    folder: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Fit the draft's trainable layers to the shards, one shard per optimizer step, resuming a saved state."""
    folder.mkdir(parents=True, exist_ok=True)
    params = [p for p in draft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    total = settings.epochs * len(shard_paths)
    meta = _load_state(folder, draft, optimizer) or {"optimizer_steps": 0, "losses": []}
    if meta["optimizer_steps"]:
        progress(f"training: resuming at step {meta['optimizer_steps']} of {total}")
    draft.train()
    began, last_save = time.monotonic(), time.monotonic()
    done_at_start = meta["optimizer_steps"]
    while meta["optimizer_steps"] < total:
        step = meta["optimizer_steps"]
        epoch, index = divmod(step, len(shard_paths))
        order = torch.randperm(len(shard_paths), generator=torch.Generator().manual_seed(settings.seed + epoch))
        shard = load_shard(shard_paths[int(order[index])])
        for group in optimizer.param_groups:  # cosine decay over the whole run, after a short warm-up
            warm = min(1.0, (step + 1) / max(1, total // 20))
            group["lr"] = settings.lr * warm * 0.5 * (1 + math.cos(math.pi * step / total))
        loss, _ = shard_loss(draft, shard, settings.objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        meta["optimizer_steps"] = step + 1
        meta["losses"].append(round(loss.item(), 5))
        if time.monotonic() - last_save >= settings.checkpoint_every_s or meta["optimizer_steps"] == total:
            _save_state(folder, draft, optimizer, meta)
            last_save = time.monotonic()
        spent = time.monotonic() - began
        left = spent / (meta["optimizer_steps"] - done_at_start) * (total - meta["optimizer_steps"])
        if meta["optimizer_steps"] % 5 == 0 or meta["optimizer_steps"] == total:
            recent = meta["losses"][-len(shard_paths) :]
            progress(
                f"training: step {meta['optimizer_steps']}/{total} (epoch {epoch + 1}), {settings.objective} "
                f"{sum(recent) / len(recent):.3f} (mean of the last {len(recent)}), {spent:.0f}s, ~{left:.0f}s left"
            )
    draft.eval()
    return meta


def heldout_figures(target: Any, drafts: dict[str, Any], shard_paths: Sequence[Path]) -> dict[str, dict[str, float]]:
    """Per draft, on held-out sampled answers, against the target's exact law at T = 1:

    agreement   share of positions where the draft's most likely token is the target's
    acceptance  E Σ_v min(p_v, q_v): the expected acceptance of one drafted token under rejection sampling
    kl          forward KL(p ‖ q) in nats per token
    """
    sums = {name: {"agreement": 0.0, "acceptance": 0.0, "kl": 0.0} for name in drafts}
    count = 0
    with torch.no_grad():
        for path in shard_paths:
            shard = load_shard(path)
            rows, cols, _ = answer_positions(shard)
            logp = torch.log_softmax(shard_logits(target, shard, rows, cols).float(), -1)
            p = logp.exp()
            count += len(rows)
            for name, draft in drafts.items():
                logq = torch.log_softmax(shard_logits(draft, shard, rows, cols).float(), -1)
                figures = sums[name]
                figures["agreement"] += float((logq.argmax(-1) == logp.argmax(-1)).sum())
                figures["acceptance"] += float(torch.minimum(p, logq.exp()).sum())
                figures["kl"] += float((p * (logp - logq)).sum())
    return {
        name: {k: round(v / max(count, 1), 4) for k, v in f.items()} | {"positions": count} for name, f in sums.items()
    }
