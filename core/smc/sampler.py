"""One SMC-SD cycle over a whole batch of particle groups, as tensor operations.

An engine (or the reference runner) does the model work — γ draft tokens per particle with their log q, one
target forward over the N·(γ+1) positions of each request — and hands the tensors to `SMCSampler.cycle`, which
weighs the block, samples the bonus, commits exactly γ+1 tokens per live particle (fewer only at EOS or the
token budget), decides per request whether to resample and returns the fork plan the engine applies to its own
copies of token histories and KV blocks. Every random draw comes from `rng`'s counter-based uniforms, keyed by
(request seed, cycle), so all ranks and all batch layouts make the same decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from specplug.core.smc import resample, weights
from specplug.core.smc.config import SMCConfig
from specplug.core.smc.resample import ForkPlan
from specplug.core.smc.rng import Stream, stream_keys, uniforms
from specplug.core.smc.state import ParticleState
from specplug.core.types import PAD_TOKEN, DraftBatch


@dataclass
class CycleResult:
    """What one cycle did, per request r and particle n."""

    tokens: torch.Tensor  # [R, N, γ+1] committed tokens (PAD_TOKEN past num_committed)
    num_committed: torch.Tensor  # [R, N]
    increments: torch.Tensor  # [R, N] float64 log-weight added this cycle
    live: torch.Tensor  # [R, N] bool — particles that took part in this cycle
    ess: torch.Tensor  # [R] float64 — effective sample size before the resampling decision
    plan: ForkPlan  # the resampling decision (identity for groups that did not resample)


@dataclass
class FinalResult:
    chosen: torch.Tensor  # [R] index of the returned particle
    tokens: list[list[int]]  # the chosen particle's tokens per request
    log_weights: torch.Tensor  # [R, N] final log-weights of all particles
    log_z: torch.Tensor  # [R] log Ẑ, the unbiased evidence estimate (0 in expectation of Ẑ at α = 1)
    lengths: torch.Tensor  # [R, N]


class SMCSampler:
    def __init__(self, config: SMCConfig, eos_token_ids: Sequence[int] = ()) -> None:
        self.config = config
        self.eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.int64)

    def start(
        self,
        num_requests: int,
        max_new_tokens: int | torch.Tensor,
        seeds: torch.Tensor | Sequence[int],
        device: torch.device | str | None = None,
    ) -> ParticleState:
        seeds = torch.as_tensor(seeds, dtype=torch.int64)
        if seeds.numel() != num_requests:
            raise ValueError(f"need one seed per request ({num_requests}), got {seeds.numel()}")
        self.eos = self.eos.to(device)
        return ParticleState.create(
            num_requests, self.config.num_particles, max_new_tokens, seeds, self.config.block_size, device
        )

    def first_tokens(self, state: ParticleState, prompt_logits: torch.Tensor) -> torch.Tensor:
        """Sample each particle's first token from the target's power conditional after the prompt.

        prompt_logits [R, V]. Each particle draws its own token (one prefill serves the group): at α ≠ 1 a token
        shared by the whole group would fix the first token's law to the local conditional, which is not the
        power target's marginal; with independent draws and weight log Z_b, resampling corrects it.
        Returns the tokens [R, N]; they are committed to the state.
        """
        cfg, n = self.config, state.num_particles
        keys = self._keys(state, torch.full_like(state.cycles, -1), Stream.FIRST_TOKEN)
        logits = prompt_logits.unsqueeze(1).expand(-1, n, -1).flatten(0, 1)
        tokens, log_z = weights.sample_power(logits, cfg.alpha, cfg.target_temperature, keys)
        tokens, log_z = tokens.view(-1, n), log_z.view(-1, n)
        state.log_weights += log_z
        state.interval_log_weights += log_z
        state.append(tokens.unsqueeze(-1), torch.ones_like(tokens))
        state.finished |= torch.isin(tokens, self.eos) | (state.remaining == 0)
        return tokens

    def cycle(
        self,
        state: ParticleState,
        draft_tokens: torch.Tensor,
        draft_log_q: torch.Tensor,
        target_logits: torch.Tensor,
    ) -> CycleResult:
        """Weigh and commit one block for every live particle, then resample where the ESS fell too low.

        draft_tokens, draft_log_q: [R, N, γ] — log q must be the log-probability under the distribution the
        draft token was actually sampled from (after temperature and any truncation).
        target_logits: [R, N, γ+1, V] — position k scores the token after the first k draft tokens.
        Rows of finished particles are ignored (they may hold anything). A shorter block (width m < γ: an engine
        that drafts fewer tokens near its context limit) is the same cycle with m drafts and the bonus after them.
        """
        cfg = self.config
        num_requests, n, gamma = draft_tokens.shape
        if gamma > cfg.gamma or n != cfg.num_particles or target_logits.shape[2] != gamma + 1:
            raise ValueError(
                f"expected drafts [R, {cfg.num_particles}, m ≤ {cfg.gamma}] and target logits "
                f"[R, {cfg.num_particles}, m + 1, V]; got {tuple(draft_tokens.shape)} and "
                f"{tuple(target_logits.shape)}"
            )
        live = ~state.finished
        flat_logits = target_logits.flatten(0, 1)
        drafts = draft_tokens.flatten(0, 1)
        log_p = weights.target_log_probs(flat_logits[:, :gamma], drafts, cfg.target_temperature)
        delta = cfg.alpha * log_p - draft_log_q.flatten(0, 1).double()

        keys = self._keys(state, state.cycles, Stream.BONUS)
        bonus, log_z_bonus = weights.sample_power(flat_logits[:, gamma], cfg.alpha, cfg.target_temperature, keys)
        block = torch.cat([drafts, bonus.unsqueeze(1)], dim=1)  # [R·N, γ+1]

        eos_col = weights.first_eos_column(block, self.eos)
        remaining = state.remaining.flatten()
        last = torch.minimum(eos_col, remaining - 1).clamp_max(gamma)  # last column that belongs to the sequence
        increment = weights.block_increment(delta, log_z_bonus, last)
        increment = torch.where(live.flatten(), increment, torch.zeros_like(increment)).view(num_requests, n)
        counts = torch.where(live.flatten(), last + 1, torch.zeros_like(last)).view(num_requests, n)

        block = block.view(num_requests, n, gamma + 1)
        state.append(block, counts)
        state.log_weights += increment
        state.interval_log_weights += increment
        stopped = (eos_col <= last).view(num_requests, n) | (state.remaining == 0)
        state.finished |= live & stopped

        ess, plan = self._resample(state)
        state.cycles += 1
        kept = torch.arange(gamma + 1, device=block.device) < counts.unsqueeze(-1)
        committed = torch.where(kept, block, torch.full_like(block, PAD_TOKEN))
        return CycleResult(committed, counts, increment, live, ess, plan)

    def verify(self, draft: DraftBatch, target_logits: torch.Tensor, *, state: ParticleState, **_: Any) -> CycleResult:
        """`cycle` behind the `Verifier` protocol, so hosts call it through `specplug_verify` (wrappers time it).

        SMC's rows are groups: `draft.tokens` and `draft.log_q` are [R, N, γ], `target_logits` [R, N, γ+1, V].
        """
        if draft.log_q is None:
            raise ValueError("SMC-SD weighs drafts by their log q: the draft batch must carry log_q")
        return self.cycle(state, draft.tokens, draft.log_q, target_logits)

    @staticmethod
    def _keys(state: ParticleState, cycles: torch.Tensor, stream: Stream) -> torch.Tensor:
        """One key per (request, particle) for a per-token draw: flat [R·N]."""
        particles = torch.arange(state.num_particles, device=state.seeds.device).unsqueeze(0)
        return stream_keys(state.seeds.unsqueeze(1), cycles.unsqueeze(1), stream, particles).flatten()

    def _resample(self, state: ParticleState) -> tuple[torch.Tensor, ForkPlan]:
        cfg = self.config
        iota = state.interval_log_weights
        w = resample.normalized_weights(iota)
        ess = resample.effective_sample_size(w)
        n = state.num_particles
        # A relative margin keeps exactly uniform weights (ESS = N up to rounding) from resampling at threshold 1.
        due = (ess < cfg.resample_threshold * n * (1 - 1e-9)) & ~state.group_finished
        due &= n >= 2
        if not bool(due.any()):
            return ess, ForkPlan.identity(state.num_requests, n, device=iota.device)
        if cfg.resample_method == "systematic":
            counts = resample.systematic_counts(w, uniforms(state.seeds, state.cycles, Stream.RESAMPLE))
        else:
            counts = resample.multinomial_counts(w, uniforms(state.seeds, state.cycles, Stream.RESAMPLE, (n,)))
        counts = torch.where(due.unsqueeze(1), counts, torch.ones_like(counts))
        plan = resample.fork_plan(counts, due)
        state.log_z += torch.where(due, resample.resample_log_normalizer(iota), torch.zeros_like(state.log_z))
        state.copy_lineages(plan.dst, plan.src)
        reset = due.unsqueeze(1)
        state.log_weights.masked_fill_(reset, 0.0)
        state.interval_log_weights.masked_fill_(reset, 0.0)
        state.num_resamples += due.to(torch.int64)
        return ess, plan

    def finalize(self, state: ParticleState) -> FinalResult:
        """Choose each request's returned particle and the final evidence estimate log Ẑ."""
        log_w = state.log_weights
        if self.config.output_rule == "posterior":
            u = uniforms(state.seeds, state.cycles, Stream.OUTPUT)
            chosen = resample.inverse_cdf(resample.normalized_weights(log_w), u)
        else:  # arg-max weight, ties broken by length (the paper-time rule)
            best = log_w == log_w.max(dim=1, keepdim=True).values
            chosen = torch.where(best, state.lengths, -1).argmax(dim=1)
        log_z = state.log_z + resample.resample_log_normalizer(state.interval_log_weights)
        tokens = [state.particle_tokens(r, int(c)) for r, c in enumerate(chosen.tolist())]
        return FinalResult(chosen, tokens, log_w.clone(), log_z, state.lengths.clone())
