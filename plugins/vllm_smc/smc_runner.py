"""SMC-SD inside vLLM's V1 model runner: the verifier that weighs instead of rejecting, and the draft sampler.

Every particle of a group is a row of the batch and verifies its own chain, so the target's one forward scores
all N·(γ+1) positions of a group. Three methods of the runner *instance* are replaced through `core.patching`
(no vLLM class is touched, so a runner of a non-SMC engine is unchanged):
- `_sample` (the verifier): groups with equal settings (N, temperature, EOS set) share one `ParticlePool`, and
  one `SMCSampler.cycle` per pool weighs the γ drafts of every particle of every group in the batch against the
  target logits, samples the bonuses, commits all γ+1 tokens per live particle and decides the resamplings. Rows
  return every committed token (−1 after), so vLLM's own bookkeeping, KV accounting and stop checks run
  unchanged. A group's first step draws all N first tokens from slot 0's prompt logits; a particle request
  that starts later (another slot, or a fork) gets its lineage's next token forced at the end of its prefill.
- the drafter's `propose` / `_sample_draft_tokens`: drafts are drawn at the SMC draft temperature by Gumbel-max
  over counter-based uniforms keyed by (request seed, cycle, slot, position), and their log q is kept per request
  for the next cycle's weights. vLLM's own probabilistic drafting samples at the request temperature with
  unseeded noise, which would make tensor-parallel ranks disagree.
- `sample_tokens`: the step's `GroupEvent`s ride on the `ModelRunnerOutput` to the scheduler.
The state is replicated on every tensor-parallel rank: all ranks see the same (all-gathered) logits and the same
tags, and draw the same uniforms, so they take the same decisions without communicating.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from specplug.core.errors import ConfigError
from specplug.core.host import MethodSession
from specplug.core.patching import Patcher
from specplug.core.smc import SMCConfig
from specplug.core.smc.pool import ParticlePool, PoolKey
from specplug.core.smc.resample import ForkPlan
from specplug.core.smc.rng import Stream, gumbel_argmax, stream_keys
from specplug.core.smc.state import ParticleState
from specplug.core.types import PAD_TOKEN, DraftBatch, StepOutcome
from specplug.plugins.vllm_smc.smc_protocol import REPORT_ATTR, GroupEvent, ParticleTag

log = logging.getLogger("specplug")


class SMCRunner:
    """The SMC-SD state and replaced methods of one model runner."""

    def __init__(self, runner: Any, config: SMCConfig, session: MethodSession) -> None:
        self.runner = runner
        self.config = config
        self.session = session
        self.pools: dict[PoolKey, ParticlePool] = {}  # groups with equal settings share one state
        self.pool_of: dict[str, ParticlePool] = {}  # group -> its pool
        self.forks: dict[str, list[tuple[int, int]]] = {}  # (dst, src) of a group's last resampling, checked next cycle
        self.drafts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # request id -> (tokens [γ], log q [γ])
        self.events: list[GroupEvent] = []
        self._tags: dict[str, ParticleTag | None] = {}
        self._draft_rows: tuple[list[str], torch.Tensor, torch.Tensor] | None = None  # ids, is particle, keys [B, γ]
        self._draft_log_q: list[torch.Tensor] = []
        self.patcher = Patcher("vllm")

    # --- installation ----------------------------------------------------------------------------------------

    def install(self) -> None:
        runner, drafter = self.runner, getattr(self.runner, "drafter", None)
        from vllm.v1.spec_decode.draft_model import DraftModelProposer

        if not isinstance(drafter, DraftModelProposer):
            raise ConfigError(
                "speculative_config.method",
                type(drafter).__name__,
                'vLLM\'s draft-model proposer ("method": "draft_model"): SMC-SD weighs a draft model\'s tokens',
                method="smc",
            )
        if getattr(drafter, "use_local_argmax_reduction", False) or getattr(drafter, "use_heterogeneous_vocab", False):
            raise ConfigError(
                "draft model",
                "local argmax / heterogeneous vocabulary",
                "a draft sharing the target's vocabulary with full logits (the weights need q over the whole "
                "vocabulary)",
                method="smc",
            )
        self.original_sample = runner._sample
        self.original_sample_tokens = runner.sample_tokens
        self.original_propose = drafter.propose
        self.patcher.patch(runner, "_sample", self.sample, reason="SMC-SD verifier", allow_add=True)
        self.patcher.patch(runner, "sample_tokens", self.sample_tokens, reason="SMC-SD step report", allow_add=True)
        self.patcher.patch(drafter, "propose", self.propose, reason="SMC-SD draft bookkeeping", allow_add=True)
        self.patcher.patch(
            drafter, "_sample_draft_tokens", self.sample_draft_tokens, reason="SMC-SD draft sampler", allow_add=True
        )
        self.patcher.verify()

    # --- tags and housekeeping ------------------------------------------------------------------------------

    def tag(self, request_id: str) -> ParticleTag | None:
        if request_id not in self._tags:
            state = self.runner.requests.get(request_id)
            params = getattr(state, "sampling_params", None)
            self._tags[request_id] = ParticleTag.from_extra_args(getattr(params, "extra_args", None))
        return self._tags[request_id]

    def _forget_departed(self) -> None:
        """Drop what belongs to requests vLLM no longer holds (finished, aborted, forked away)."""
        alive = self.runner.requests
        for cache in (self._tags, self.drafts):
            for request_id in [r for r in cache if r not in alive]:
                del cache[request_id]
        live_groups = {tag.group for tag in self._tags.values() if tag is not None}
        for group in [g for g in self.pool_of if g not in live_groups]:
            self._drop(group)

    # --- groups and their pools ------------------------------------------------------------------------------

    def add_group(self, tag: ParticleTag, device: torch.device | str = "cpu") -> ParticlePool:
        """Give a starting group a row in the pool of its settings (N, temperature, EOS set)."""
        key = (tag.num_particles, float(tag.temperature), tuple(sorted(set(tag.eos_token_ids))))
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = ParticlePool(self.config, key, device)
        pool.add(tag.group, tag.max_tokens, tag.seed)
        self.pool_of[tag.group] = pool
        return pool

    def group_state(self, group: str) -> ParticleState:
        """One group's particle state (a copy of its pool row, R = 1): for tests and diagnostics."""
        pool = self.pool_of[group]
        return pool.take(pool.rows([group]))

    def _drop(self, group: str) -> None:
        pool = self.pool_of.pop(group, None)
        if pool is not None:
            pool.remove(group)
            if not len(pool):
                self.pools.pop(pool.key, None)
        self.forks.pop(group, None)

    # --- the verifier -----------------------------------------------------------------------------------------

    def sample(self, logits: torch.Tensor, spec_decode_metadata: Any) -> Any:
        from vllm.v1.outputs import SamplerOutput

        batch = self.runner.input_batch
        num_reqs = batch.num_reqs
        req_ids = list(batch.req_ids[:num_reqs])
        tags = [self.tag(r) for r in req_ids]
        if all(t is None for t in tags):  # warm-up and profiling runs
            return self.original_sample(logits, spec_decode_metadata)
        self._forget_departed()
        spec = spec_decode_metadata
        num_drafts = list(spec.num_draft_tokens) if spec is not None else [0] * num_reqs
        width = spec.max_spec_len + 1 if spec is not None else 1
        if spec is not None:  # row i's logits: its num_drafts[i] target positions, then its bonus position
            ends = spec.cu_num_sampled_tokens.to(device="cpu", dtype=torch.int64)
            starts = ends - torch.tensor(num_drafts, dtype=torch.int64) - 1
        else:
            starts = torch.arange(num_reqs, dtype=torch.int64)
        out = torch.full((num_reqs, width), PAD_TOKEN, dtype=torch.int32)
        discard = self.runner.discard_request_mask.np[:num_reqs]
        starting: list[tuple[ParticleTag, int]] = []
        cycling: dict[ParticlePool, list[tuple[str, int, int]]] = {}  # pool -> (group, slot, row)
        failed: set[str] = set()
        for row, (request_id, tag) in enumerate(zip(req_ids, tags, strict=True)):
            if tag is None:
                raise RuntimeError(f"request {request_id} reached an SMC-SD runner without its particle tag")
            if discard[row]:  # a prefill chunk that is not the last: vLLM discards its token
                out[row, 0] = 0
            elif self.runner.requests[request_id].output_token_ids:
                pool = self.pool_of.get(tag.group)
                if pool is not None:
                    cycling.setdefault(pool, []).append((tag.group, tag.slot, row))
                elif tag.group not in failed:
                    failed.add(tag.group)
                    self._fail(tag.group, "drafts arrived for a group this runner does not hold")
            # The end of a prefill. Its row may carry placeholder drafts: vLLM pads a prefill that the prefix cache
            # shortened to one token to the spec-decode width; they are rejected (−1) like any unused column.
            elif tag.starts_group:
                starting.append((tag, row))
            else:
                self._force(tag, request_id, out, row)
        if starting:
            self._start(starting, logits, starts, out)
        for pool, items in cycling.items():
            self._cycle(pool, items, tags, req_ids, logits, starts, num_drafts, spec, out)
        return SamplerOutput(sampled_token_ids=out.to(logits.device), logprobs_tensors=None)

    def _start(
        self, starting: list[tuple[ParticleTag, int]], logits: torch.Tensor, starts: torch.Tensor, out: torch.Tensor
    ) -> None:
        """Slot 0's prefill ended: every particle of its group draws its first token, one call per pool."""
        by_pool: dict[ParticlePool, list[tuple[str, int]]] = {}
        for tag, row in starting:
            if tag.group in self.pool_of:
                out[row, 0] = 0
                self._fail(tag.group, "its first request started twice")
                continue
            pool = self.add_group(tag, logits.device)
            by_pool.setdefault(pool, []).append((tag.group, row))
        for pool, items in by_pool.items():
            groups = [g for g, _ in items]
            rows = torch.tensor([r for _, r in items], dtype=torch.int64)
            first, state = pool.first_tokens(pool.rows(groups), logits[starts[rows].to(logits.device)])
            out[rows, 0] = first[:, 0].to(device="cpu", dtype=torch.int32)
            self._emit(pool, groups, state, [GroupEvent(g, "start", 0) for g in groups])

    def _force(self, tag: ParticleTag, request_id: str, out: torch.Tensor, row: int) -> None:
        """A particle request that joins its group (a new slot or a fork) continues its lineage's last token."""
        pool = self.pool_of.get(tag.group)
        out[row, 0] = 0
        if pool is None:
            return self._fail(tag.group, f"{request_id} joined a group this runner does not hold")
        finished, length, token = pool.lineage_tail(tag.group, tag.slot)
        if finished or length != tag.prefix_len + 1:
            return self._fail(tag.group, f"{request_id} carries {tag.prefix_len} lineage tokens, the runner {length}")
        out[row, 0] = token

    def _cycle(
        self,
        pool: ParticlePool,
        items: list[tuple[str, int, int]],
        tags: list[ParticleTag | None],
        req_ids: list[str],
        logits: torch.Tensor,
        starts: torch.Tensor,
        num_drafts: list[int],
        spec: Any,
        out: torch.Tensor,
    ) -> None:
        """One SMC-SD cycle for every group of a pool in this batch: one gather, one core call, one scatter."""
        gamma, n, device = self.config.gamma, pool.config.num_particles, logits.device
        groups = list(dict.fromkeys(g for g, _, _ in items))
        index = {g: i for i, g in enumerate(groups)}
        g_idx = torch.tensor([index[g] for g, _, _ in items], dtype=torch.int64)
        slot = torch.tensor([s for _, s, _ in items], dtype=torch.int64)
        row = torch.tensor([r for _, _, r in items], dtype=torch.int64)
        cols = torch.arange(gamma + 1)

        # Lockstep: each group verifies exactly its live slots, γ drafts each, the drafts this runner drew.
        live = ~pool.finished(pool.rows(groups)).cpu()
        present = torch.zeros((len(groups), n), dtype=torch.int64).index_put_(
            (g_idx, slot), torch.ones_like(slot), accumulate=True
        )
        short = torch.tensor([num_drafts[r] != gamma for _, _, r in items])
        if spec is not None:
            draft_end = spec.cu_num_draft_tokens.to(device="cpu", dtype=torch.int64)[row]
            flat = spec.draft_token_ids.to(device="cpu", dtype=torch.int64)
            drafts_of_rows = flat[(draft_end - gamma).clamp_min(0).unsqueeze(1) + cols[:gamma]]
        else:  # no row drafted: every group is out of lockstep
            drafts_of_rows = torch.full((len(items), gamma), -1, dtype=torch.int64)
        stored = [self.drafts.get(req_ids[r]) for _, _, r in items]
        missing = torch.tensor([s is None for s in stored])
        empty = (torch.full((gamma,), -1, dtype=torch.int64), torch.zeros(gamma))
        stored_tokens = torch.stack([(s or empty)[0].to("cpu", torch.int64) for s in stored])
        stored_log_q = torch.stack([(s or empty)[1].to("cpu", torch.float32) for s in stored])
        foreign = missing | (stored_tokens != drafts_of_rows).any(dim=1)
        unlocked = (present != live.to(torch.int64)).any(dim=1) | torch.zeros(len(groups), dtype=torch.bool).index_put_(
            (g_idx,), short, accumulate=True
        )
        drew = torch.zeros(len(groups), dtype=torch.bool).index_put_((g_idx,), foreign & ~short, accumulate=True)
        bad = unlocked | drew
        if bool(bad.any()):
            for i in bad.nonzero().flatten().tolist():
                if bool(unlocked[i]):
                    have = {s: num_drafts[r] for g, s, r in sorted(items, key=lambda x: x[1]) if g == groups[i]}
                    want = live[i].nonzero().flatten().tolist()
                    self._fail(groups[i], f"a cycle needs all live slots {want} with {gamma} drafts, got {have}")
                else:
                    who = [
                        req_ids[r] for (g, _, r), f in zip(items, foreign.tolist(), strict=True) if g == groups[i] and f
                    ]
                    self._fail(groups[i], f"the drafts verified for {who[0]} are not the ones this runner drew")
            keep = ~bad[g_idx]
            groups = [g for g, b in zip(groups, bad.tolist(), strict=True) if not b]
            if not groups:
                return
            g_idx = (torch.cumsum(~bad, 0) - 1)[g_idx[keep]]
            slot, row, drafts_of_rows, stored_log_q = slot[keep], row[keep], drafts_of_rows[keep], stored_log_q[keep]

        pool_rows = pool.rows(groups)
        drafts = torch.zeros((len(groups), n, gamma), dtype=torch.int64)
        drafts[g_idx, slot] = drafts_of_rows
        log_q = torch.zeros((len(groups), n, gamma), dtype=torch.float32)
        log_q[g_idx, slot] = stored_log_q
        # One gather of the target rows: a finished slot reads row 0's logits, which the cycle ignores.
        positions = torch.zeros((len(groups), n, gamma + 1), dtype=torch.int64)
        positions[g_idx, slot] = starts[row].unsqueeze(1) + cols
        target = logits[positions.to(device)]

        state = pool.take(pool_rows)
        events = [GroupEvent(g, "cycle", c) for g, c in zip(groups, state.cycles.tolist(), strict=True)]
        self._check_forks(groups, events, target, g_idx, slot, row, tags, req_ids)
        draft = DraftBatch(
            tokens=drafts.to(device), num_tokens=torch.full((len(groups),), gamma), log_q=log_q.to(device)
        )
        result = self.session.pm.hook.specplug_verify(
            verifier=pool.sampler, draft=draft, target_logits=target, options={"state": state}
        )
        pool.put(pool_rows, state)
        out[row, : gamma + 1] = result.tokens[g_idx, slot].to(device="cpu", dtype=torch.int32)
        ess = result.ess.cpu() / n
        for event, e in zip(events, ess.tolist(), strict=True):
            event.ess = e
        self.session.step(
            StepOutcome(
                request_ids=[req_ids[r] for r in row.tolist()],
                num_proposed=torch.full((row.numel(),), gamma),
                num_accepted=(result.num_committed[g_idx, slot].cpu() - 1).clamp_min(0),
                ess=ess[g_idx],
                resampled=result.plan.resampled.cpu()[g_idx],
                extra={"groups": groups, "cycles": [e.cycle for e in events]},
            )
        )
        self._emit(pool, groups, state, events, result.plan)

    def _check_forks(
        self,
        groups: list[str],
        events: list[GroupEvent],
        target: torch.Tensor,
        g_idx: torch.Tensor,
        slot: torch.Tensor,
        row: torch.Tensor,
        tags: list[ParticleTag | None],
        req_ids: list[str],
    ) -> None:
        """A fork and its ancestor hold equal contexts until this cycle: record the evidence on the event."""
        for i, (group, event) in enumerate(zip(groups, events, strict=True)):
            forks = self.forks.pop(group, None)
            if not forks:
                continue
            rows = {int(s): int(r) for s, r, g in zip(slot, row, g_idx, strict=True) if int(g) == i}
            for dst, src in forks:
                event.fork_logit_gap.append(float((target[i, dst, 0] - target[i, src, 0]).abs().max()))
                event.fork_context_equal.append(
                    self._context(tags, req_ids, rows, dst) == self._context(tags, req_ids, rows, src)
                )

    def _context(self, tags: list[ParticleTag | None], req_ids: list[str], rows: dict[int, int], slot: int) -> list:
        """The lineage a slot's request holds: its prompt past the user's prompt, then its outputs."""
        row = rows[slot]
        tag, state = tags[row], self.runner.requests[req_ids[row]]
        assert tag is not None
        return list(state.prompt_token_ids[tag.prompt_len :]) + list(state.output_token_ids)

    def _emit(
        self,
        pool: ParticlePool,
        groups: list[str],
        state: ParticleState,
        events: list[GroupEvent],
        plan: ForkPlan | None = None,
    ) -> None:
        """Fill the step's events from the groups' state after the step (`state`, rows in `groups` order): fork
        plans, finished slots, and the results of ended groups."""
        n = pool.config.num_particles
        finished = state.finished.tolist()
        if plan is not None and bool(plan.resampled.any()):
            pairs: dict[int, list[tuple[int, int]]] = {}
            for d, s in zip(plan.dst.tolist(), plan.src.tolist(), strict=True):
                pairs.setdefault(d // n, []).append((d % n, s % n))
            for i in plan.resampled.nonzero().flatten().tolist():
                event = events[i]
                event.resampled = True
                event.dst, event.src = [d for d, _ in pairs.get(i, [])], [s for _, s in pairs.get(i, [])]
                self.forks[groups[i]] = [(d, s) for d, s in pairs.get(i, []) if not finished[i][d]]
        for event, slots in zip(events, finished, strict=True):
            event.finished = slots
        ended = state.group_finished.nonzero().flatten()
        if ended.numel():
            final = pool.sampler.finalize(state.take(ended))
            for j, i in enumerate(ended.tolist()):
                event = events[i]
                event.chosen, event.tokens, event.log_z = int(final.chosen[j]), final.tokens[j], float(final.log_z[j])
            for i in ended.tolist():
                self._drop(groups[i])
        self.events.extend(events)

    def _fail(self, group: str, reason: str) -> None:
        """A broken group is ended with an error for its user request; the server keeps serving."""
        log.error("specplug SMC-SD: group %s failed: %s", group, reason)
        self._drop(group)
        self.events.append(GroupEvent(group, "error", -1, reason=reason))

    # --- the report -------------------------------------------------------------------------------------------

    def sample_tokens(self, *args: Any, **kwargs: Any) -> Any:
        output = self.original_sample_tokens(*args, **kwargs)
        events, self.events = self.events, []
        if events and hasattr(output, "req_ids"):
            from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT

            if output is EMPTY_MODEL_RUNNER_OUTPUT:
                output = copy.copy(output)
            setattr(output, REPORT_ATTR, events)
        return output

    # --- the draft sampler ------------------------------------------------------------------------------------

    def propose(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        batch = self.runner.input_batch
        req_ids = list(batch.req_ids[: batch.num_reqs])
        cycle_of = {group: cycle for pool in self.pools.values() for group, cycle in pool.cycles().items()}
        seeds, cycles, slots, particle = [], [], [], []
        for request_id in req_ids:
            tag = self.tag(request_id)
            held = tag is not None and tag.group in cycle_of
            particle.append(held)
            seeds.append(tag.seed if held else 0)
            cycles.append(cycle_of[tag.group] if held else 0)
            slots.append(tag.slot if held else 0)
        self._draft_log_q = []
        self._draft_rows = None
        if any(particle):
            gamma = self.config.gamma
            # Draw k of a row uses key (seed, cycle, DRAFT, slot·γ + k): the same on every rank and batch layout.
            base = torch.tensor(slots, dtype=torch.int64).unsqueeze(1) * gamma + torch.arange(gamma)
            keys = stream_keys(torch.tensor(seeds).unsqueeze(1), torch.tensor(cycles).unsqueeze(1), Stream.DRAFT, base)
            self._draft_rows = (req_ids, torch.tensor(particle), keys)
        draft_ids = self.session.engine_propose(self.original_propose, *args, **kwargs)
        if self._draft_rows is not None and len(self._draft_log_q) == draft_ids.shape[1]:
            log_q = torch.stack(self._draft_log_q, dim=1).cpu()
            tokens = draft_ids.to(device="cpu", dtype=torch.int64)
            for row, request_id in enumerate(req_ids):
                if particle[row]:
                    self.drafts[request_id] = (tokens[row], log_q[row])
        self._draft_rows = None
        return draft_ids

    def sample_draft_tokens(self, hidden_states: torch.Tensor, sampling_metadata: Any) -> tuple[torch.Tensor, None]:
        drafter = self.runner.drafter
        logits = drafter.model.compute_logits(hidden_states)
        greedy = logits.argmax(dim=-1)
        rows = self._draft_rows
        if rows is None or rows[1].numel() != logits.shape[0]:
            self._draft_rows = None  # an unexpected layout: no particle draft of this step can be weighed
            return greedy, None
        _, particle, keys = rows
        k = len(self._draft_log_q)
        scaled = logits.float() / self.config.draft_temperature
        sampled = gumbel_argmax(scaled, keys[:, k].to(logits.device))
        log_q = torch.log_softmax(scaled, dim=-1).gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        self._draft_log_q.append(log_q)
        return torch.where(particle.to(logits.device), sampled, greedy), None


def install_smc(runner: Any, session: MethodSession) -> SMCRunner:
    """Give a freshly built V1 runner SMC-SD's verifier and draft sampler (startup errors are ConfigErrors)."""
    from specplug.plugins.vllm_smc.smc_settings import check_scheduler, smc_config_from_vllm

    check_scheduler(runner.vllm_config)
    config = smc_config_from_vllm(runner.vllm_config)
    smc = SMCRunner(runner, config, session)
    smc.install()
    runner.specplug_smc = smc
    log.info(
        "specplug: SMC-SD installed on the model runner (N=%d, γ=%d, draft T=%s)",
        config.num_particles,
        config.gamma,
        config.draft_temperature,
    )
    return smc
