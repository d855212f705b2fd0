"""The reference engine for `specplug bench`: the core's transformers runner, in this process.

Batches of `concurrency` prompts run together (static batching); useful to compare methods on a real model
without an engine, and the oracle for exact-match checks. Speed figures here are not an engine's speed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from specplug.bench.arms import Arm, csd_settings, proposer_arm, toolspec_settings
from specplug.bench.measure import ArmJob, ArmRun, RequestRecord


def make_proposer(arm: Arm, target, model_path: Path):
    arm = proposer_arm(arm)
    if arm.kind == "ar":
        return None
    if arm.kind == "ngram":
        from specplug.core.proposers.ngram import NgramProposer

        o = arm.options
        return NgramProposer(o["k"], o["min"], o["max"])
    if arm.kind == "draft_model":
        from specplug.assets import resolve_model
        from specplug.core.proposers.draft_model import DraftModelProposer
        from specplug.reference.models import load_causal_lm

        o = arm.options
        source = model_path if o["model"] == "target" else resolve_model(o["model"])
        return DraftModelProposer(load_causal_lm(source, num_layers=o["layers"]), o["k"])
    if arm.kind == "toolspec":
        from specplug.core.plugin_manager import get_plugin_manager

        return get_plugin_manager().make_proposer("toolspec", {**toolspec_settings(arm), "tokenizer": str(model_path)})
    raise ValueError(f"the reference engine has no arm kind {arm.kind}")


def bind_requests(proposer, tag: str, prompts: list[list[int]], tools: list) -> None:
    """Per-request drafters (ToolSpec) learn each row's request: id, prompt, tools."""
    if not hasattr(proposer, "bind"):
        return
    from specplug.core.types import RequestContext

    tools = tools or [None] * len(prompts)
    pairs = enumerate(zip(prompts, tools, strict=True))
    proposer.bind([RequestContext(f"{tag}-{i}", p, tenant="bench", tools=t) for i, (p, t) in pairs])


def make_verifier(arm: Arm):
    """None (the runner's greedy default) except for arms a specplug verifier judges (CSD), built by the plugin
    manager outside a host: the verifier learns online itself, and its memory persists across the arm's batches."""
    if not arm.verifies:
        return None
    from specplug.core.plugin_manager import get_plugin_manager

    return get_plugin_manager().make_verifier(arm.kind, csd_settings(arm))


def write_memory(proposer, verifier, path: Path) -> None:
    """Write the arm's memory: the verifier's (CSD's correction memory) or else the proposer's (ToolSpec's)."""
    holder = getattr(verifier, "bank", None) or proposer
    if not callable(getattr(holder, "save", None)):
        raise ValueError("this arm keeps no memory to save")
    holder.save(str(path))


def run_arm(job: ArmJob) -> list[ArmRun]:
    """Run one arm in this process (`job.timeout_s` is not enforced here)."""
    from tqdm import tqdm

    from specplug.reference.models import load_causal_lm
    from specplug.reference.runner import ReferenceRunner

    arm, workload, max_tokens = job.arm, job.workload, job.max_tokens
    target = load_causal_lm(job.model_path)
    runner = ReferenceRunner(target, eos_token_ids=workload.eos_token_ids)
    proposer = make_proposer(arm, target, job.model_path)
    verifier = make_verifier(arm)
    bind_requests(proposer, "warmup", workload.warmup, workload.warmup_tools)
    runner.generate(workload.warmup, min(max_tokens, 8), proposer=proposer, verifier=verifier)  # not measured
    runs = []
    for conc in job.concurrencies:
        if hasattr(proposer, "reset_memory"):  # every pass starts from the arm's own memory: neither the warm-up's
            proposer.reset_memory()  # answers nor an earlier pass's answers to these very prompts
        records: list[RequestRecord] = []
        drafts = draft_tokens = accepted = rescued = 0
        hist: list[int] = []
        start = time.perf_counter()
        starts = range(0, len(workload.prompts), conc)
        for first in tqdm(starts, desc=f"  {arm.label} c={conc}", unit="batch", file=sys.stderr, leave=False):
            batch = workload.prompts[first : first + conc]
            bind_requests(proposer, f"c{conc}-{first}", batch, workload.tools[first : first + conc])
            got = runner.generate(batch, max_tokens, proposer=proposer, verifier=verifier)
            for i, tokens in enumerate(got.tokens):
                records.append(RequestRecord(first + i, tokens, got.first_token_s[i], got.finish_s[i], got.forwards[i]))
            drafts += len(got.stats.accepted_per_step)
            draft_tokens += got.stats.proposed
            accepted += got.stats.accepted
            rescued += got.stats.rescued
            hist.extend(got.stats.accepted_per_step)
        wall = time.perf_counter() - start
        runs.append(
            ArmRun(
                arm.label,
                conc,
                records,
                wall,
                drafts,
                draft_tokens,
                accepted,
                hist,
                num_rescued=rescued if verifier is not None else None,
                drafted_by_source=dict(proposer.drafted) if hasattr(proposer, "drafted") else None,
            )
        )
    if job.save_memory is not None:
        write_memory(proposer, verifier, job.save_memory)
    return runs
