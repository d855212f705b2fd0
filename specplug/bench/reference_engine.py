"""The reference engine for `specplug bench`: the core's transformers runner, in this process.

Batches of `concurrency` prompts run together (static batching; sampled runs seed each batch with 1000 + its first
prompt's index); useful to compare methods on a real model
without an engine, and the oracle for exact-match checks. Speed figures here are not an engine's speed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from specplug.bench.arms import Arm, csd_settings, proposer_arm, smc_settings, toolspec_settings
from specplug.bench.measure import ArmJob, ArmRun, RequestRecord
from specplug.core.host import MethodSession
from specplug.core.types import RequestContext


def make_proposer(arm: Arm, target, model_path: Path, temperature: float = 0.0):
    arm = proposer_arm(arm)
    if arm.kind == "ar":
        return None
    if arm.kind == "ngram":
        from specplug.core.proposers.ngram import NgramProposer

        o = arm.options
        return NgramProposer(o["k"], o["min"], o["max"])
    if arm.kind == "draft_model":
        from specplug.core.proposers.draft_model import DraftModelProposer

        o = arm.options
        drafting = temperature if o.get("sample", "greedy") == "probabilistic" else 0.0
        return DraftModelProposer(load_draft(o, model_path), o["k"], drafting)
    if arm.kind == "toolspec":
        return None  # the arm's session builds it
    raise ValueError(f"the reference engine has no arm kind {arm.kind}")


def load_draft(options: dict, model_path: Path):
    """The draft model of a draft_model arm's options (an smc arm's through `proposer_arm`): `model` (target = the
    target itself), cut to its first `layers` layers (None: all)."""
    from specplug.assets import resolve_model
    from specplug.reference.models import load_causal_lm

    source = model_path if options["model"] == "target" else resolve_model(options["model"])
    return load_causal_lm(source, num_layers=options["layers"])


def open_session(arm: Arm, model_path: Path, proposer) -> MethodSession | None:
    """A specplug method's arm runs as a session of the reference runner, opened as an engine host opens it: the
    method's plugin builds its memory and pieces, and learns from the runner's announcements (CSD's memory from
    every step, ToolSpec's from every finished request). Other arms run the runner's plain pieces."""
    settings = {"csd": csd_settings, "toolspec": toolspec_settings}.get(arm.kind)
    if settings is None:
        return None
    k = getattr(proposer, "k", None)
    facts = {"tokenizer": str(model_path), **({"num_speculative_tokens": k} if k else {})}
    return MethodSession(arm.kind, settings(arm), engine="reference", facts=facts)


def requests(tag: str, prompts: list[list[int]], tools: list) -> list[RequestContext]:
    """One request per row: id, prompt and tools (ToolSpec's schema)."""
    tools = tools or [None] * len(prompts)
    pairs = enumerate(zip(prompts, tools, strict=True))
    return [RequestContext(f"{tag}-{i}", p, tenant="bench", tools=t) for i, (p, t) in pairs]


def write_memory(session: MethodSession | None, path: Path) -> None:
    """Write the arm's memory (CSD's correction memory, ToolSpec's invocation memory)."""
    if session is None or not callable(getattr(session.memory, "save", None)):
        raise ValueError("this arm keeps no memory to save")
    session.memory.save(str(path))


def run_arm(job: ArmJob) -> list[ArmRun]:
    """Run one arm in this process (`job.timeout_s` is not enforced here)."""
    from tqdm import tqdm

    from specplug.reference.models import load_causal_lm
    from specplug.reference.runner import ReferenceRunner

    arm, workload, max_tokens = job.arm, job.workload, job.max_tokens
    target = load_causal_lm(job.model_path)
    if arm.kind == "smc":
        return run_smc_arm(job, target)
    runner = ReferenceRunner(target, eos_token_ids=workload.eos_token_ids)
    proposer = make_proposer(arm, target, job.model_path, job.temperature)
    session = open_session(arm, job.model_path, proposer)
    warmup = requests("warmup", workload.warmup, workload.warmup_tools)
    runner.generate(workload.warmup, min(max_tokens, 8), proposer=proposer, session=session, requests=warmup)
    runs = []
    for conc in job.concurrencies:
        if session is not None and arm.kind == "toolspec":  # every pass starts from the arm's own memory: neither
            session.reset_memory()  # the warm-up's answers nor an earlier pass's answers to these very prompts
        records: list[RequestRecord] = []
        drafts = draft_tokens = accepted = rescued = 0
        hist: list[int] = []
        start = time.perf_counter()
        starts = range(0, len(workload.prompts), conc)
        for first in tqdm(starts, desc=f"  {arm.label} c={conc}", unit="batch", file=sys.stderr, leave=False):
            batch = workload.prompts[first : first + conc]
            rows = requests(f"c{conc}-{first}", batch, workload.tools[first : first + conc])
            got = runner.generate(
                batch,
                max_tokens,
                proposer=proposer,
                session=session,
                requests=rows,
                temperature=job.temperature,
                seed=1000 + first,
            )
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
                num_rescued=rescued if arm.verifies else None,
                drafted_by_source=_drafted(session),
            )
        )
    if job.save_memory is not None:
        write_memory(session, job.save_memory)
    if session is not None:  # as an engine host ends: held requests leave, close hooks persist (save_path)
        session.close()
    return runs


def run_smc_arm(job: ArmJob, target) -> list[ArmRun]:
    """An smc arm: the core's SMC-SD sampler over the core's transformers runner (N particles per request as rows
    of one batch, the N·(γ+1) positions of a cycle in one target forward), `concurrency` requests at a time."""
    from tqdm import tqdm

    from specplug.core.smc import SMCConfig
    from specplug.reference.smc_runner import SMCReferenceRunner

    arm, workload = job.arm, job.workload
    o = arm.options
    runner = SMCReferenceRunner(
        target,
        load_draft(proposer_arm(arm).options, job.model_path),
        SMCConfig.from_mapping(smc_settings(arm) | {"gamma": o["k"], "target_temperature": job.temperature}),
        eos_token_ids=workload.eos_token_ids,
    )
    runner.generate(workload.warmup, min(job.max_tokens, 8))
    runs = []
    for conc in job.concurrencies:
        records: list[RequestRecord] = []
        rows = accepted = 0  # particle-cycles, and the drafts they committed (all of them: weights, not rejection)
        start = time.perf_counter()
        for first in tqdm(
            range(0, len(workload.prompts), conc),
            desc=f"  {arm.label} c={conc}",
            unit="batch",
            file=sys.stderr,
            leave=False,
        ):
            batch = workload.prompts[first : first + conc]
            got = runner.generate(batch, job.max_tokens, seed=1000 + first)
            for i, tokens in enumerate(got.tokens):
                records.append(
                    RequestRecord(first + i, tokens, got.first_token_s[i], got.finish_s[i], got.stats.target_forwards)
                )
            for step in got.stats.committed:  # per cycle, the tokens each live particle committed (its bonus +1)
                rows += len(step)
                accepted += sum(step) - len(step)
        wall = time.perf_counter() - start
        runs.append(ArmRun(arm.label, conc, records, wall, rows, accepted, accepted))
    return runs


def _drafted(session: MethodSession | None) -> dict | None:
    drafted = getattr(session.proposer, "drafted", None) if session is not None else None
    return dict(drafted) if drafted is not None else None
