"""`CSDAlgo`: how SGLang's scheduler and argument resolution see `--speculative-algorithm CSD`.

CSD runs on SGLang's NGRAM machinery (corpus drafting, tree verify, no draft model), and SGLang branches on
predicates such as `is_ngram()` in many places (CUDA-graph capture of the verify step, the future map, the
external-corpus manager), so CSD answers like NGRAM there. Importing this module needs only `spec_info`
(no `sgl_kernel`); the worker class is imported by the factory in `registration`.
"""

from __future__ import annotations

import logging
from typing import Any

from sglang.srt.speculative.spec_info import CustomSpecAlgo  # re-exported from spec_registry; the public spelling

from specplug.core.host import MethodSession
from specplug.plugins.sglang_csd.settings import (
    ALGORITHM,
    METHODS,
    check_server_args,
    default_num_draft_tokens,
    load_settings,
    method_config,
)

log = logging.getLogger("specplug")

NGRAM_DEVICES = ("cuda", "cpu", "xpu")
NGRAM_MAX_RUNNING_REQUESTS = 48


class CSDAlgo(CustomSpecAlgo):
    """NGRAM-like predicates, plus the methods SGLang 0.5.23 calls on every algorithm object but `CustomSpecAlgo`
    lacks (`carries_draft_hidden_states`: `managers/scheduler.py:1540`; `create_future_map`: `scheduler.py:1681`;
    `need_topk`: `managers/overlap_utils.py:381`; `get_platform_worker_cls`: `speculative/adaptive_spec_params.py:68`)
    — without them the scheduler would stop with an AttributeError."""

    def is_ngram(self) -> bool:
        return True

    def has_draft_kv(self) -> bool:
        return False  # the tree lives only in the verify mask, like NGRAM's (spec_info.py:174-178)

    def carries_draft_hidden_states(self) -> bool:
        return False

    def need_topk(self) -> bool:
        return False

    def get_platform_worker_cls(self) -> type | None:
        return None  # the CSD worker extends the in-tree NGRAM worker on every platform

    def create_future_map(
        self,
        device: Any,
        req_to_token_pool: Any,
        needs_cpu_seq_lens: bool = True,
        needs_confidence_relay: bool = False,
    ) -> Any:
        """Same as `SpeculativeAlgorithm.create_future_map` (spec_info.py:185-200)."""
        from sglang.srt.managers.overlap_utils import FutureMap

        return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens, needs_confidence_relay)

    def handle_server_args(self, server_args: Any) -> None:
        """NGRAM's defaults and refusals, re-implemented from `_handle_ngram` (`arg_groups/speculative_hook.py:
        1285-1367`, private) with CSD's tree-size default. SGLang passes a recorder that reads the resolving view
        and declares what is assigned (`overrides.py:157-175`)."""
        settings = load_settings()
        device = server_args.device
        if device not in NGRAM_DEVICES:
            raise ValueError(f"CSD speculative decoding only supports CUDA, CPU, or XPU devices; got {device!r}.")
        if device == "cpu" and not server_args.disable_overlap_schedule:
            server_args.disable_overlap_schedule = True
            log.warning("Overlap schedule is not implemented for speculative decoding on CPU.")
        if server_args.max_running_requests is None:
            server_args.max_running_requests = NGRAM_MAX_RUNNING_REQUESTS
            log.warning("CSD: max running requests set to %d (--max-running-requests).", NGRAM_MAX_RUNNING_REQUESTS)
        server_args.enable_mixed_chunk = False
        server_args.speculative_eagle_topk = server_args.speculative_ngram_max_bfs_breadth
        if server_args.speculative_num_draft_tokens is None:
            server_args.speculative_num_draft_tokens = default_num_draft_tokens(settings)
            log.warning(
                "CSD: speculative_num_draft_tokens set to %d (--speculative-num-draft-tokens).",
                server_args.speculative_num_draft_tokens,
            )
        if server_args.speculative_num_steps is None:
            server_args.speculative_num_steps = (
                server_args.speculative_num_draft_tokens // server_args.speculative_eagle_topk
            )
        if server_args.speculative_ngram_external_corpus_path is not None:
            _check_external_corpus(server_args)
        check_server_args(server_args, settings)
        topk, page_size = server_args.speculative_eagle_topk, getattr(server_args, "page_size", None)
        if topk > 1 and page_size is not None and page_size > 1 and server_args.attention_backend != "flashinfer":
            raise ValueError(
                f"speculative_eagle_topk({topk}) > 1 with page_size({page_size}) > 1 is unstable and produces "
                "incorrect results for paged attention backends. This combination is only supported for the "
                "'flashinfer' backend."
            )
        from sglang.srt.runtime_context import attn_dp_enabled_of

        if attn_dp_enabled_of(server_args):
            raise ValueError("CSD (like ngram) speculative decoding does not support dp attention.")


def _check_external_corpus(server_args: Any) -> None:
    if server_args.speculative_ngram_external_sam_budget <= 0:
        raise ValueError(
            "--speculative-ngram-external-sam-budget must be positive when "
            "--speculative-ngram-external-corpus-path is set."
        )
    if server_args.speculative_ngram_external_corpus_max_tokens <= 0:
        raise ValueError(
            "--speculative-ngram-external-corpus-max-tokens must be positive when "
            "--speculative-ngram-external-corpus-path is set."
        )
    if server_args.speculative_ngram_external_sam_budget > server_args.speculative_num_draft_tokens - 1:
        raise ValueError(
            "speculative_ngram_external_sam_budget must be less than or equal to "
            f"speculative_num_draft_tokens - 1 ({server_args.speculative_num_draft_tokens - 1})."
        )


def validate_server_args(server_args: Any) -> None:
    """SGLang's `validate_server_args` callback (run before `handle_server_args`, `speculative_hook.py:245-250`):
    the settings file parses, its values are valid, the flags agree, and the method's pieces build (its memory
    file loads) — all in the launcher, before any GPU work.

    The pieces are built by opening a `MethodSession` as the worker will (the plugin hooks validate and load);
    this one only checks: it never serves, announces nothing and saves nothing (no `save_path` here)."""
    settings = load_settings()
    check_server_args(server_args, settings)
    given = method_config(settings, gamma_from_engine=False, saver=False)
    MethodSession(METHODS[ALGORITHM], given, engine="sglang", facts={"model_path": server_args.model_path})
