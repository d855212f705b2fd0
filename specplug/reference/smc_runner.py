"""SMC-SD end to end on a transformers model: N particles per request decoded as rows of one batch.

Per cycle: the draft model proposes γ tokens for every live particle (with log q), the target scores all
N·(γ+1) positions of every request in ONE forward, and the core's `SMCSampler` weighs, commits and resamples.
A resampled particle's row takes its ancestor's tokens; the row's KV cache is brought in line by `SlotCache.sync`
(slots after the common prefix are masked and the ancestor's tokens re-fed inside that same forward), so a fork
never costs an extra forward — it costs re-feeding the diverged suffix, which an engine avoids by sharing blocks.
Prefill runs once per particle row here (the reference has no prefix sharing); engines prefill once per request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from specplug.core.plugin_manager import SpecplugPluginManager, create_plugin_manager
from specplug.core.proposers.draft_model import DraftModelProposer
from specplug.core.smc import FinalResult, SMCConfig, SMCSampler
from specplug.core.types import DraftBatch, StepOutcome
from specplug.reference.slot_cache import SlotCache


@dataclass
class SMCStats:
    target_forwards: int = 0  # batched target forwards, the prefill included
    cycles: int = 0
    committed: list[list[int]] = field(default_factory=list)  # per cycle: tokens committed by each live particle
    ess: list[list[float]] = field(default_factory=list)  # per cycle: ESS / N of each request still running
    resampled: list[int] = field(default_factory=list)  # per cycle: requests that resampled
    live_groups: list[int] = field(default_factory=list)  # per cycle: requests still running
    refed_tokens: int = 0  # tokens re-fed to the target because a fork replaced a row's lineage
    wall_s: float = 0.0

    @property
    def resample_rate(self) -> float:
        """Fraction of (request, cycle) pairs that resampled."""
        groups = sum(self.live_groups)
        return sum(self.resampled) / groups if groups else 0.0


@dataclass
class SMCGenerationResult:
    tokens: list[list[int]]  # the returned particle per request
    final: FinalResult  # all particles' weights, log Ẑ, the choice
    particles: list[list[list[int]]]  # every particle's tokens, per request
    stats: SMCStats
    first_token_s: list[float]
    finish_s: list[float]


class SMCReferenceRunner:
    def __init__(
        self,
        target: torch.nn.Module,
        draft: torch.nn.Module,
        config: SMCConfig,
        *,
        eos_token_ids: Sequence[int] = (),
        plugin_manager: SpecplugPluginManager | None = None,
    ) -> None:
        self.target, self.draft, self.config = target, draft, config
        self.eos = list(eos_token_ids)
        self.pm = plugin_manager or create_plugin_manager(load_entry_points=False)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        seed: int = 0,
        request_ids: Sequence[str] | None = None,
    ) -> SMCGenerationResult:
        cfg, n = self.config, self.config.num_particles
        num_requests = len(prompts)
        ids = list(request_ids or [str(i) for i in range(num_requests)])
        sampler = SMCSampler(cfg, self.eos)
        state = sampler.start(num_requests, max_new_tokens, seeds=[seed * 1_000_003 + r for r in range(num_requests)])
        rows = num_requests * n
        proposer = DraftModelProposer(self.draft, cfg.gamma, cfg.draft_temperature, seed=seed)
        proposer.start_batch(rows)
        cache = SlotCache(self.target, rows)
        stats = SMCStats()
        started = time.perf_counter()
        first_at, finish_at = [0.0] * num_requests, [0.0] * num_requests

        def contexts() -> list[list[int]]:
            return [list(prompts[r // n]) + state.particle_tokens(r // n, r % n) for r in range(rows)]

        feeds = cache.sync(contexts())
        logits = cache.extend(feeds)
        stats.target_forwards += 1
        last = torch.tensor([len(f) - 1 for f in feeds])
        prompt_logits = logits[torch.arange(0, rows, n), last[::n]]
        sampler.first_tokens(state, prompt_logits)
        first_at = [time.perf_counter() - started] * num_requests

        while not bool(state.group_finished.all()):
            live = (~state.finished).flatten().tolist()
            running = ~state.group_finished
            context = contexts()
            draft = self.pm.hook.specplug_propose(proposer=proposer, contexts=context, options={"active": live})
            feeds = cache.sync([c if a else None for c, a in zip(context, live, strict=True)])
            stats.refed_tokens += sum(max(len(f) - 1, 0) for f, a in zip(feeds, live, strict=True) if a)
            offsets = torch.tensor([max(len(f) - 1, 0) for f in feeds])
            for row in range(rows):
                if live[row]:
                    feeds[row] = feeds[row] + draft.tokens[row].tolist()
            logits = cache.extend(feeds)
            stats.target_forwards += 1
            index = (offsets.unsqueeze(1) + torch.arange(cfg.gamma + 1)).clamp_max(logits.shape[1] - 1)
            target_logits = logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
            grouped = DraftBatch(
                tokens=draft.tokens.view(num_requests, n, cfg.gamma),
                num_tokens=torch.full((num_requests,), cfg.gamma),
                log_q=draft.log_q.view(num_requests, n, cfg.gamma),
            )
            result = self.pm.hook.specplug_verify(
                verifier=sampler,
                draft=grouped,
                target_logits=target_logits.view(num_requests, n, cfg.gamma + 1, -1),
                options={"state": state},
            )
            stats.cycles += 1
            stats.committed.append(result.num_committed[result.live].tolist())
            stats.ess.append((result.ess[running] / n).tolist())
            stats.resampled.append(int(result.plan.resampled.sum()))
            stats.live_groups.append(int(running.sum()))
            now = time.perf_counter() - started
            for r in torch.nonzero(running & state.group_finished).flatten().tolist():
                finish_at[r] = now
            self.pm.hook.specplug_on_step(
                outcome=StepOutcome(
                    request_ids=[i for i, a in zip(ids, running.tolist(), strict=True) if a],
                    num_proposed=torch.full((int(running.sum()),), cfg.gamma * n),
                    num_accepted=result.num_committed.sum(1)[running] - result.live.sum(1)[running],
                    ess=result.ess[running],
                    resampled=result.plan.resampled[running],
                ),
                session=None,
            )
        stats.wall_s = time.perf_counter() - started
        final = sampler.finalize(state)
        particles = [[state.particle_tokens(r, i) for i in range(n)] for r in range(num_requests)]
        return SMCGenerationResult(final.tokens, final, particles, stats, first_at, finish_at)
