"""One SGLang scheduler process's CSD state: the correction memory, the calibrated verifier, this step's pending
memory updates, statistics and saving. Engine types appear only as duck-typed tensors, so it is testable alone.

How a verify step goes (driven by `verify_hook` and `worker.CSDWorker`):
1. SGLang's own `eagle_sample` runs first: it applies penalties, logit bias and the grammar mask to the logits in
   place and gives the standard result (greedy tree verification for greedy requests).
2. `calibrate` judges the same tree with the same (processed) logits under the CSD rule. A row takes the
   calibrated result only where it accepted strictly more tokens; otherwise SGLang's own row stays, bit for bit —
   so with λ = ∞ or τ = 1 the output is SGLang's. Only greedy rows (`top_k ≤ 1`) are calibrated: CSD is a rule
   for greedy verification, and a sampled row keeps SGLang's sampling verdict.
3. The step's mismatches wait in `pending` and are committed by the worker right after the forward returns, so
   every decision of a step reads the memory as it was when the step began (and a failed step learns nothing).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.csd.verifier import CalibratedTreeVerifier
from specplug.plugins.sglang_csd.settings import CSDSettings
from specplug.plugins.sglang_csd.tree_layout import draft_batch_from_sglang, sglang_outputs

log = logging.getLogger("specplug")

Sync = Callable[[Sequence[torch.Tensor]], None]


def load_bank(settings: CSDSettings, model_path: str | None = None) -> CorrectionMemoryBank:
    """The memory bank to start from: `memory_path` if set (a missing, corrupt or foreign file raises
    DataFileError saying why — a typo must not silently start cold), else an empty bank."""
    config = settings.config
    if config.memory_path is None:
        return CorrectionMemoryBank(config.max_pairs)
    bank = CorrectionMemoryBank.load(config.memory_path, max_pairs=config.max_pairs)
    recorded = bank.metadata.get("model_path")
    if model_path is not None and recorded is not None and recorded != model_path:
        log.warning(
            "specplug CSD: %s was calibrated with model %s, this server runs %s; token ids must mean the same",
            config.memory_path,
            recorded,
            model_path,
        )
    return bank


class CSDRuntime:
    """CSD state of one process. `sync` broadcasts the step's verdict tensors from TP rank 0 (None: single rank);
    `saver` is False on every rank but one, so one file has one writer."""

    def __init__(
        self,
        settings: CSDSettings,
        *,
        model_path: str | None = None,
        sync: Sync | None = None,
        saver: bool = True,
        bank: CorrectionMemoryBank | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.config
        self.bank = bank if bank is not None else load_bank(settings, model_path)
        if model_path is not None:
            self.bank.metadata["model_path"] = model_path  # what the memory goes on learning from
        self.bank.metadata["engine"] = "sglang"
        self.memory = self.bank.memory(self.config.namespace)
        self.verifier = CalibratedTreeVerifier(self.memory, self.config, update_memory=False)
        self.sync = sync
        self.saver = saver and self.config.save_path is not None
        self.pending: list[torch.Tensor] = []
        self.steps = self.calibrated_rows = self.rescued_tokens = self.extra_tokens = self.failures = 0
        self._lock = threading.Lock()
        self._last_save = time.monotonic()
        self._save_thread: threading.Thread | None = None
        if self.saver:
            atexit.register(self.save)

    # --- the verify step -------------------------------------------------------------------------------------

    def calibrate(
        self,
        *,
        candidates: torch.Tensor,
        retrieve_index: torch.Tensor,
        retrieve_next_token: torch.Tensor,
        retrieve_next_sibling: torch.Tensor,
        logits: torch.Tensor,
        greedy_rows: torch.Tensor | None,
        predict: torch.Tensor,
        accept_lens: torch.Tensor,
        accept_index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SGLang's verdict (`predict`, `accept_lens`, `accept_index`) with CSD's where it accepts more.

        candidates [bs, n] (root first), links [bs, n], logits [bs*n, V] as processed by SGLang's verify.
        """
        bs, n = candidates.shape
        draft = draft_batch_from_sglang(candidates, retrieve_next_token, retrieve_next_sibling, greedy_rows)
        result = self.verifier.verify(draft, logits.reshape(bs, n, -1))
        ours_predict, ours_lens, ours_index = sglang_outputs(result, retrieve_index, predict.dtype)
        take = ours_lens > accept_lens
        new_predict = torch.where(take.repeat_interleave(n), ours_predict, predict)
        new_index = torch.where(take.unsqueeze(1), ours_index.to(accept_index.dtype), accept_index)
        new_lens = torch.where(take, ours_lens.to(accept_lens.dtype), accept_lens)
        if self.sync is not None:
            self.sync([new_predict, new_index, new_lens])
        if result.mismatches is not None and result.mismatches.numel():
            self.pending.append(result.mismatches)
        self.steps += 1
        self.calibrated_rows += int(draft.num_tokens.gt(0).sum())
        self.extra_tokens += int((new_lens - accept_lens).sum())
        if result.num_rescued is not None:
            self.rescued_tokens += int(torch.where(take, result.num_rescued, 0).sum())
        return new_predict, new_lens, new_index

    def commit(self) -> int:
        """Add this step's mismatches to the memory (unless `online` is off); returns how many were added."""
        pending, self.pending = self.pending, []
        if not self.config.online or not pending:
            return 0
        pairs = torch.cat(pending).cpu()
        self.memory.observe(pairs[:, 0], pairs[:, 1])
        return int(pairs.shape[0])

    def discard(self) -> None:
        """Forget this step's mismatches (the step failed)."""
        self.pending = []

    # --- after the step --------------------------------------------------------------------------------------

    def on_verify_complete(self, num_correct_drafts_per_req: Sequence[int]) -> None:
        """Called once SGLang has the accept counts on the CPU: the cheap moment for a periodic save."""
        interval = self.settings.save_interval_s
        if self.saver and interval > 0 and time.monotonic() - self._last_save >= interval:
            self.save_in_background()

    def save_in_background(self) -> bool:
        """Start a save in a daemon thread unless one is running; serving never waits for the disk."""
        with self._lock:
            if self._save_thread is not None and self._save_thread.is_alive():
                return False
            self._last_save = time.monotonic()
            self._save_thread = threading.Thread(target=self.save, name="specplug-csd-save", daemon=True)
            self._save_thread.start()
            return True

    def save(self) -> bool:
        """Write the memory to `save_path` (atomic, checksummed); a failure is logged, never raised into SGLang."""
        if not self.saver or self.config.save_path is None:
            return False
        self.bank.metadata["stats"] = self.stats()
        return self.bank.save_quietly(self.config.save_path)

    def close(self) -> bool:
        """Final save (waiting for a running one) and no save at exit any more."""
        thread = self._save_thread
        if thread is not None:
            thread.join()
        if self.saver:
            atexit.unregister(self.save)
        return self.save()

    def stats(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "calibrated_rows": self.calibrated_rows,
            "rescued_tokens": self.rescued_tokens,
            "extra_tokens": self.extra_tokens,
            "failures": self.failures,
            "pairs": len(self.memory),
            "observations": self.memory.observations,
        }
