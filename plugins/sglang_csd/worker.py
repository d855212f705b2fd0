"""`CSDWorker`: SGLang's NGRAM worker with CSD's calibrated verification and its correction memory.

Imported only by the CSD worker factory, in the scheduler process (it needs SGLang's worker stack: `sgl_kernel`,
a GPU or SGLang's CPU build). What it adds to `NGRAMWorker` (`sglang/srt/speculative/ngram_worker.py:76`):
- at start: reads the settings (`SPECPLUG_CSD_CONFIG`), checks them against the resolved flags, loads the memory
  file, installs the verify hook and checks that it took effect — every failure stops the start with its cause;
- each step: runs the parent's `forward_batch_generation` with this worker's CSD state active, so the hook on
  `eagle_sample` calibrates this worker's verify calls only, then commits the step's mismatches to the memory;
- when SGLang has the accept counts on the CPU (`on_verify_complete_cpu`, `base_spec_worker.py:379-387`): a
  periodic background save to `save_path` (TP rank 0 only; a final save at exit).
Drafting is NGRAM's unchanged: the corpus tree of `--speculative-num-draft-tokens` nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from sglang.srt.speculative.ngram_worker import NGRAMWorker

from specplug.plugins.sglang_csd.runtime import CSDRuntime, Sync
from specplug.plugins.sglang_csd.settings import check_server_args, load_settings
from specplug.plugins.sglang_csd.verify_hook import activated, install_verify_hook

log = logging.getLogger("specplug")


def _tensor_parallel() -> tuple[int, Sync | None]:
    """(this process's TP rank, a broadcast-from-rank-0 for the verdict, or None with one rank).

    SGLang broadcasts sampled verdicts from rank 0 the same way (`eagle_utils.py:662-675`, `:797-805`); CSD's
    verdict also depends on this rank's memory, so every rank commits rank 0's decision.
    """
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    group = parallel.tp_group
    if group.world_size <= 1:
        return int(parallel.tp_rank), None

    def sync(tensors: Sequence[torch.Tensor]) -> None:
        for tensor in tensors:
            group.broadcast(tensor, src=0)

    return int(parallel.tp_rank), sync


class CSDWorker(NGRAMWorker):
    def __init__(self, server_args: Any, gpu_id: int, nccl_port: int, target_worker: Any) -> None:
        settings = load_settings()  # before the parent allocates anything: a bad file stops the start at once
        super().__init__(server_args, gpu_id, nccl_port, target_worker)
        check_server_args(server_args, settings, num_draft_tokens=self.draft_token_num)
        install_verify_hook()
        tp_rank, sync = _tensor_parallel()
        self.csd = CSDRuntime(
            settings, model_path=getattr(server_args, "model_path", None), sync=sync, saver=tp_rank == 0
        )
        log.info(
            "specplug CSD: λ=%s τ=%s, %d draft nodes, memory %s (%d pairs, namespace %r)%s",
            settings.config.lam,
            settings.config.tau,
            self.draft_token_num - 1,
            settings.config.memory_path or "empty",
            len(self.csd.memory),
            settings.config.namespace,
            f", saved to {settings.config.save_path}" if self.csd.saver else "",
        )

    def forward_batch_generation(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        with activated(self.csd):
            try:
                result = super().forward_batch_generation(batch, *args, **kwargs)
            except BaseException:
                self.csd.discard()
                raise
        self.csd.commit()
        return result

    def on_verify_complete_cpu(self, num_correct_drafts_per_req: list[int], batch_size: int = 0) -> None:
        super().on_verify_complete_cpu(num_correct_drafts_per_req, batch_size=batch_size)
        self.csd.on_verify_complete(num_correct_drafts_per_req)
