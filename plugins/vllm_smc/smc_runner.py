"""SMC-SD inside vLLM's V1 model runner: the verifier that weighs instead of rejecting, and the draft sampler.

Every particle of a group is a row of the batch and verifies its own chain, so the target's one forward scores
all N·(γ+1) positions of a group. Three methods of the runner *instance* are replaced through `core.patching`
(no vLLM class is touched, so a runner of a non-SMC engine is unchanged):
- `_sample` (the verifier): per group, `SMCSampler.cycle` weighs the γ drafts of every particle against the
  target logits, samples the bonus, commits all γ+1 tokens per live particle and decides the resampling. Rows
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
import dataclasses
import logging
from typing import Any

import torch

from specplug.core.errors import ConfigError
from specplug.core.host import MethodSession
from specplug.core.patching import Patcher
from specplug.core.smc import SMCConfig, SMCSampler
from specplug.core.smc.rng import Stream, gumbel_argmax, stream_keys
from specplug.core.types import PAD_TOKEN, DraftBatch, StepOutcome
from specplug.plugins.vllm_smc.smc_protocol import REPORT_ATTR, GroupEvent, ParticleTag

log = logging.getLogger("specplug")


class GroupReplica:
    """One user request's particles as this rank sees them (the core's state with R = 1)."""

    def __init__(self, tag: ParticleTag, config: SMCConfig, device: torch.device) -> None:
        cfg = dataclasses.replace(config, num_particles=tag.num_particles, target_temperature=tag.temperature)
        self.sampler = SMCSampler(cfg, tag.eos_token_ids)
        self.state = self.sampler.start(1, tag.max_tokens, [tag.seed], device)
        self.forks: list[tuple[int, int]] = []  # (dst, src) of the last resampling, checked at the next cycle

    @property
    def cycle(self) -> int:
        return int(self.state.cycles[0])

    def lineage_tail(self, slot: int) -> tuple[int, int]:
        """(length, last token) of a slot's lineage."""
        length = int(self.state.lengths[0, slot])
        return length, int(self.state.tokens[0, slot, length - 1]) if length else PAD_TOKEN


class SMCRunner:
    """The SMC-SD state and replaced methods of one model runner."""

    def __init__(self, runner: Any, config: SMCConfig, session: MethodSession) -> None:
        self.runner = runner
        self.config = config
        self.session = session
        self.groups: dict[str, GroupReplica] = {}
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
        for group in [g for g in self.groups if g not in live_groups]:
            del self.groups[group]

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
        cycles: dict[str, dict[int, int]] = {}
        for row, (request_id, tag) in enumerate(zip(req_ids, tags, strict=True)):
            if tag is None:
                raise RuntimeError(f"request {request_id} reached an SMC-SD runner without its particle tag")
            if discard[row]:  # a prefill chunk that is not the last: vLLM discards its token
                out[row, 0] = 0
            elif self.runner.requests[request_id].output_token_ids:
                cycles.setdefault(tag.group, {})[tag.slot] = row
            # The end of a prefill. Its row may carry placeholder drafts: vLLM pads a prefill that the prefix cache
            # shortened to one token to the spec-decode width; they are rejected (−1) like any unused column.
            elif tag.starts_group:
                self._start(tag, logits[int(starts[row])], out, row)
            else:
                self._force(tag, request_id, out, row)
        for group, rows in cycles.items():
            self._cycle(group, rows, tags, req_ids, logits, starts, num_drafts, spec, out)
        return SamplerOutput(sampled_token_ids=out.to(logits.device), logprobs_tensors=None)

    def _start(self, tag: ParticleTag, prompt_logits: torch.Tensor, out: torch.Tensor, row: int) -> None:
        replica = GroupReplica(tag, self.config, prompt_logits.device)
        self.groups[tag.group] = replica
        first = replica.sampler.first_tokens(replica.state, prompt_logits.unsqueeze(0))
        out[row, 0] = int(first[0, 0])
        self._emit(GroupEvent(tag.group, "start", 0), replica)

    def _force(self, tag: ParticleTag, request_id: str, out: torch.Tensor, row: int) -> None:
        """A particle request that joins its group (a new slot or a fork) continues its lineage's last token."""
        replica = self.groups.get(tag.group)
        out[row, 0] = 0
        if replica is None:
            return self._fail(tag.group, f"{request_id} joined a group this runner does not hold")
        length, token = replica.lineage_tail(tag.slot)
        if bool(replica.state.finished[0, tag.slot]) or length != tag.prefix_len + 1:
            return self._fail(tag.group, f"{request_id} carries {tag.prefix_len} lineage tokens, the runner {length}")
        out[row, 0] = token

    def _cycle(
        self,
        group: str,
        rows: dict[int, int],
        tags: list[ParticleTag | None],
        req_ids: list[str],
        logits: torch.Tensor,
        starts: torch.Tensor,
        num_drafts: list[int],
        spec: Any,
        out: torch.Tensor,
    ) -> None:
        replica = self.groups.get(group)
        gamma = self.config.gamma
        if replica is None:
            return self._fail(group, "drafts arrived for a group this runner does not hold")
        state = replica.state
        live = [s for s, f in enumerate(state.finished[0].tolist()) if not f]
        if sorted(rows) != live or any(num_drafts[r] != gamma for r in rows.values()):
            have = {s: num_drafts[r] for s, r in sorted(rows.items())}
            return self._fail(group, f"a cycle needs all live slots {live} with {gamma} drafts, got {have}")
        slots = torch.tensor(sorted(rows), dtype=torch.int64)
        row_index = torch.tensor([rows[s] for s in sorted(rows)], dtype=torch.int64)
        n, cols = state.num_particles, torch.arange(gamma + 1)
        draft_end = spec.cu_num_draft_tokens.to(device="cpu", dtype=torch.int64)[row_index]
        flat_drafts = spec.draft_token_ids.to(torch.int64)
        device = logits.device
        drafts = torch.zeros((1, n, gamma), dtype=torch.int64, device=device)
        drafts[0, slots] = flat_drafts[(draft_end - gamma).unsqueeze(1) + cols[:gamma]].to(device)
        log_q = torch.zeros((1, n, gamma), dtype=torch.float32, device=device)
        for slot, row in sorted(rows.items()):
            stored = self.drafts.get(req_ids[row])
            if stored is None or not torch.equal(stored[0].to(device), drafts[0, slot]):
                return self._fail(group, f"the drafts verified for {req_ids[row]} are not the ones this runner drew")
            log_q[0, slot] = stored[1].to(device)
        target = torch.zeros((1, n, gamma + 1, logits.shape[-1]), dtype=logits.dtype, device=device)
        target[0, slots] = logits[(starts[row_index].unsqueeze(1) + cols).to(device)]
        event = GroupEvent(group, "cycle", replica.cycle)
        for dst, src in replica.forks:  # contexts of a fork and its ancestor are equal until this cycle
            event.fork_logit_gap.append(float((target[0, dst, 0] - target[0, src, 0]).abs().max()))
            event.fork_context_equal.append(
                self._context(tags, req_ids, rows, dst) == self._context(tags, req_ids, rows, src)
            )
        replica.forks = []
        draft = DraftBatch(tokens=drafts, num_tokens=torch.full((1,), gamma), log_q=log_q)
        result = self.session.pm.hook.specplug_verify(
            verifier=replica.sampler, draft=draft, target_logits=target, options={"state": state}
        )
        out[row_index, : gamma + 1] = result.tokens[0, slots].to(device="cpu", dtype=torch.int32)
        event.ess = float(result.ess[0]) / n
        rows_of_slots = [req_ids[rows[s]] for s in sorted(rows)]
        self.session.step(
            StepOutcome(
                request_ids=rows_of_slots,
                num_proposed=torch.full((len(rows),), gamma),
                num_accepted=(result.num_committed[0, slots].cpu() - 1).clamp_min(0),
                ess=torch.full((len(rows),), event.ess),
                resampled=result.plan.resampled[0].expand(len(rows)).cpu(),
                extra={"group": group, "cycle": event.cycle},
            )
        )
        self._emit(event, replica, result.plan)

    def _context(self, tags: list[ParticleTag | None], req_ids: list[str], rows: dict[int, int], slot: int) -> list:
        """The lineage a slot's request holds: its prompt past the user's prompt, then its outputs."""
        row = rows[slot]
        tag, state = tags[row], self.runner.requests[req_ids[row]]
        assert tag is not None
        return list(state.prompt_token_ids[tag.prompt_len :]) + list(state.output_token_ids)

    def _emit(self, event: GroupEvent, replica: GroupReplica, plan: Any = None) -> None:
        state = replica.state
        if plan is not None and bool(plan.resampled[0]):
            event.resampled = True
            event.dst, event.src = plan.dst.tolist(), plan.src.tolist()
            replica.forks = [(d, s) for d, s in zip(event.dst, event.src, strict=True) if not state.finished[0, d]]
        event.finished = state.finished[0].tolist()
        if bool(state.group_finished[0]):
            final = replica.sampler.finalize(state)
            event.chosen, event.tokens, event.log_z = int(final.chosen[0]), final.tokens[0], float(final.log_z[0])
            del self.groups[event.group]
        self.events.append(event)

    def _fail(self, group: str, reason: str) -> None:
        """A broken group is ended with an error for its user request; the server keeps serving."""
        log.error("specplug SMC-SD: group %s failed: %s", group, reason)
        self.groups.pop(group, None)
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
        seeds, cycles, slots, particle = [], [], [], []
        for request_id in req_ids:
            tag = self.tag(request_id)
            replica = self.groups.get(tag.group) if tag is not None else None
            particle.append(replica is not None)
            seeds.append(tag.seed if replica is not None else 0)
            cycles.append(replica.cycle if replica is not None else 0)
            slots.append(tag.slot if replica is not None else 0)
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
