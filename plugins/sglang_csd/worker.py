"""`CSDWorker`: SGLang's NGRAM worker with CSD's calibrated verification and its correction memory.

Imported only by the CSD worker factory, in the scheduler process (it needs SGLang's worker stack: `sgl_kernel`,
a GPU or SGLang's CPU build). What it adds to `NGRAMWorker` (`sglang/srt/speculative/ngram_worker.py:76`):
- at start: reads the settings (`SPECPLUG_CSD_CONFIG`), checks them against the resolved flags, installs the verify
  hook and checks that it took effect, and opens the process's `MethodSession` (`runtime.CSDRuntime`: the
  method's memory file is loaded and its verifier built by the plugin hooks) — every failure stops the start with
  its cause;
- each step: NGRAM drafts as ever, through `specplug_propose` (`_prepare_for_speculative_decoding`); runs the
  parent's `forward_batch_generation` with this worker's host state active, so the hook on
  `eagle_sample` judges this worker's verify calls only, then announces the step (`session.step`, preceded by
  `session.request_started` for requests verified for the first time); the method learns there;
- when a request finishes (`note_request_finished`, `base_spec_worker.py:389-395`, called by SGLang's batch-result
  processor): `session.request_finished`;
- when SGLang has the accept counts on the CPU (`on_verify_complete_cpu`, `base_spec_worker.py:379-387`): a
  background save at SGLang's `save_interval_s` (TP rank 0 only); `session.close()` at exit saves the last state.
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
            settings,
            model_path=getattr(server_args, "model_path", None),
            num_draft_tokens=self.draft_token_num,
            sync=sync,
            saver=tp_rank == 0,
        )
        log.info(
            "specplug: %s (method %s) λ=%s τ=%s, %d draft nodes, memory %s (%d pairs, namespace %r)%s",
            self.csd.algorithm,
            self.csd.session.method,
            settings.config.lam,
            settings.config.tau,
            self.draft_token_num - 1,
            settings.config.memory_path or "empty",
            len(self.csd.memory) if self.csd.memory is not None else 0,
            settings.config.namespace,
            f", saved to {settings.config.save_path}" if self.csd.saver else "",
        )

    def _prepare_for_speculative_decoding(self, batch: Any) -> None:
        """NGRAM's drafting (`ngram_worker.py:307`, called first thing by `forward_batch_generation`), unchanged,
        made through `specplug_propose`."""
        self.csd.engine_propose(super()._prepare_for_speculative_decoding, batch)

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

    def note_request_finished(self, *, rid: str, natural_stop: bool) -> None:
        super().note_request_finished(rid=rid, natural_stop=natural_stop)
        self.csd.request_finished(rid, natural_stop)
