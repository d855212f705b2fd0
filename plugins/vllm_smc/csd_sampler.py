"""CSD inside vLLM: a `RejectionSampler` whose greedy path applies the calibrated rule of `core.verifiers`.

vLLM has no registry for verifiers; the V1 model runner calls `self.rejection_sampler(metadata, draft_probs,
logits, sampling_metadata)` (`vllm/v1/worker/gpu_model_runner.py:3460` in 0.32.0) and expects a `SamplerOutput`
whose `sampled_token_ids` is int32 [batch, max_spec_len + 1] with -1 after the last committed token. This class
keeps that contract, so the scheduler, KV bookkeeping and vLLM's own spec-decode metrics (accepted tokens count
exact and rescued ones alike) work unchanged.

The rule runs on vLLM's flat token layout: the per-position verdicts come from the core over [num_tokens, V]
logits; only [batch, max_spec_len] tensors are padded to decide accepted prefixes. A step whose batch holds a
sampled request (temperature > 0) or asks for logprobs falls back to vLLM's standard verification for that step
(lossless; counted in `stats.fallback_steps`); `CSDAdmission` refuses such requests up front on a CSD server.
The memory learns only from real steps: vLLM's warm-up calls with random logits are excluded (`warming_up`).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from vllm.v1.outputs import SamplerOutput
from vllm.v1.sample.rejection_sampler import RejectionSampler

from specplug.core.csd.config import CSDConfig
from specplug.core.errors import ConfigError
from specplug.core.memory.correction_bank import CorrectionMemoryBank
from specplug.core.memory.persist import DataFileError
from specplug.core.types import PAD_TOKEN
from specplug.core.verifiers.calibrated import rescue_rule, resolve_chain

log = logging.getLogger("specplug")
SAVE_INTERVAL_S = 60.0


@dataclass
class CSDStats:
    steps: int = 0
    drafts: int = 0  # rows with at least one draft token
    proposed: int = 0
    accepted: int = 0  # exact + rescued
    rescued: int = 0
    fallback_steps: int = 0  # steps verified by vLLM's standard rule (sampled or logprobs requests in the batch)


def load_bank(config: CSDConfig) -> CorrectionMemoryBank:
    """The memory the server starts with; a bad file stops startup with the reason (never a mid-serving crash)."""
    if config.memory_path is None:
        return CorrectionMemoryBank(config.max_pairs)
    try:
        return CorrectionMemoryBank.load(config.memory_path, config.max_pairs)
    except DataFileError as exc:
        raise ConfigError(
            "memory_path", config.memory_path, f"a valid CSD memory file ({exc.reason})", method="csd"
        ) from None


class CSDRejectionSampler(RejectionSampler):
    """vLLM's rejection sampler with CSD's calibrated acceptance on all-greedy steps."""

    def __init__(self, sampler: Any, spec_config: Any, device: Any, *, csd: CSDConfig, bank: CorrectionMemoryBank):
        super().__init__(sampler, spec_config, device)
        self.csd = csd
        self.bank = bank
        self.memory = bank.memory(csd.namespace)
        self.stats = CSDStats()
        self.warming_up = False
        self._saved_at = time.monotonic()
        self._saving: threading.Thread | None = None
        if csd.save_path:
            atexit.register(self.save)

    def forward(self, metadata: Any, draft_probs: Any, logits: torch.Tensor, sampling_metadata: Any) -> SamplerOutput:
        if not sampling_metadata.all_greedy or sampling_metadata.max_num_logprobs is not None:
            if not self.warming_up:
                self.stats.fallback_steps += 1
            return super().forward(metadata, draft_probs, logits, sampling_metadata)
        bonus = self.sampler(
            logits=logits[metadata.bonus_logits_indices], sampling_metadata=sampling_metadata, predict_bonus_token=True
        ).sampled_token_ids.reshape(-1)
        target = logits[metadata.target_logits_indices].to(torch.float32)
        target = self.apply_logits_processors(target, sampling_metadata, metadata)
        flat_tokens = metadata.draft_token_ids.to(torch.int64)
        best, exact, rescue = rescue_rule(flat_tokens, target, self.memory, self.csd)

        # Pad the per-position verdicts (not the logits) to [batch, max_spec_len].
        num = torch.tensor(metadata.num_draft_tokens, dtype=torch.int64, device=flat_tokens.device)
        width = metadata.max_spec_len
        start = metadata.cu_num_draft_tokens.to(torch.int64) - num
        pos = torch.arange(width, device=num.device)
        valid = pos.unsqueeze(0) < num.unsqueeze(1)
        index = (start.unsqueeze(1) + pos).clamp(0, max(flat_tokens.numel() - 1, 0))
        if flat_tokens.numel() == 0:
            index = torch.zeros_like(index)
            flat_tokens, best = flat_tokens.new_zeros(1), best.new_zeros(1)
            exact = rescue = torch.zeros(1, dtype=torch.bool, device=num.device)
        tokens, padded_best = torch.where(valid, flat_tokens[index], PAD_TOKEN), best[index]
        result, judged = resolve_chain(
            tokens, num, padded_best, valid & exact[index], valid & rescue[index], bonus.to(torch.int64)
        )
        if not self.warming_up:
            if self.csd.online and bool(judged.any()):
                self.memory.observe(tokens[judged], padded_best[judged])
            self._count(num, result.num_accepted, result.num_rescued)
            self._maybe_save()
        return SamplerOutput(sampled_token_ids=result.output_tokens.to(torch.int32), logprobs_tensors=None)

    def _count(self, num: torch.Tensor, accepted: torch.Tensor, rescued: torch.Tensor) -> None:
        s = self.stats
        s.steps += 1
        s.drafts += int((num > 0).sum())
        s.proposed += int(num.sum())
        s.accepted += int(accepted.sum())
        s.rescued += int(rescued.sum())

    # --- persistence -------------------------------------------------------------------------------------

    def _maybe_save(self) -> None:
        """Save in the background every SAVE_INTERVAL_S, so a step never waits on the disk."""
        if not self.csd.save_path or time.monotonic() - self._saved_at < SAVE_INTERVAL_S:
            return
        if self._saving is not None and self._saving.is_alive():
            return
        self._saved_at = time.monotonic()
        self._saving = threading.Thread(target=self.save, name="specplug-csd-save", daemon=True)
        self._saving.start()

    def save(self, path: str | None = None) -> bool:
        target = path or self.csd.save_path
        return bool(target) and self.bank.save_quietly(target)

    def load(self, path: str) -> dict[str, Any]:
        """Swap in the memory of another file while serving; a bad file is refused and the current memory kept."""
        try:
            bank = CorrectionMemoryBank.load(path, self.csd.max_pairs)
        except DataFileError as exc:
            log.error("specplug: %s; CSD keeps serving with its current memory", exc)
            return {"loaded": False, "error": str(exc)}
        # The worker runs steps and RPCs on one thread, so no step sees half a swap.
        self.bank, self.memory = bank, bank.memory(self.csd.namespace)
        return {"loaded": True, **self.report()}

    def report(self) -> dict[str, Any]:
        return {"stats": asdict(self.stats), "memory": self.bank.summary(), "config": asdict(self.csd)}


def csd_rpc(worker: Any, action: str, path: str | None = None) -> dict[str, Any] | None:
    """Run on every vLLM worker through `LLM.collective_rpc(csd_rpc, args=(action, path))`.

    "report": counters and memory summary; "save": write the memory to `path` (or the configured save_path);
    "load": replace the memory with the file at `path` (refused, memory kept, if the file is bad).
    Returns None on a worker whose runner has no CSD sampler.
    """
    sampler = getattr(getattr(worker, "model_runner", None), "rejection_sampler", None)
    if not isinstance(sampler, CSDRejectionSampler):
        return None
    if action == "save":
        return {"saved": sampler.save(path), **sampler.report()}
    if action == "report":
        return sampler.report()
    if action == "load" and path:
        return sampler.load(path)
    raise ValueError(f"unknown CSD action {action!r} (report, save, load PATH)")
