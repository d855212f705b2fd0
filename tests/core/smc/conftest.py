"""Enumerable toy language models for the SMC-SD test plan (research/algorithms.md §1.8).

Vocabulary V = 3; logits depend on the position and the last two tokens, target logits ~ N(0, 1.5²), draft =
target + N(0, s²). Sequences are short enough (3^7 = 2187) that the exact target law is enumerated and compared
with the empirical law of many independent SMC runs, batched as many requests of one sampler.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from specplug.core.smc import SMCConfig, SMCSampler
from specplug.core.types import PAD_TOKEN

VOCAB = 3


@dataclass
class ToyLM:
    """logits[pos, prev2, prev1, :] with VOCAB standing for 'no token' before the start."""

    logits: torch.Tensor

    @classmethod
    def random(cls, length: int, seed: int = 0, scale: float = 1.5) -> ToyLM:
        g = torch.Generator().manual_seed(seed)
        return cls(torch.randn((length, VOCAB + 1, VOCAB + 1, VOCAB), generator=g, dtype=torch.float64) * scale)

    def perturbed(self, s: float, seed: int = 1) -> ToyLM:
        g = torch.Generator().manual_seed(seed)
        return ToyLM(self.logits + s * torch.randn(self.logits.shape, generator=g, dtype=torch.float64))

    def at(self, pos: torch.Tensor, prev2: torch.Tensor, prev1: torch.Tensor) -> torch.Tensor:
        pos = pos.clamp_max(self.logits.shape[0] - 1)
        return self.logits[pos, prev2, prev1]


def _last_two(tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def pick(back: int) -> torch.Tensor:
        idx = lengths - back
        got = tokens.gather(-1, idx.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return torch.where(idx >= 0, got, VOCAB)

    return pick(2), pick(1)


def run_smc(
    target: ToyLM,
    draft: ToyLM,
    config: SMCConfig,
    num_runs: int,
    length: int,
    seed: int = 0,
    eos: tuple[int, ...] = (),
    trace: list | None = None,
):
    """`num_runs` independent SMC-SD generations of `length` tokens, batched as requests of one sampler."""
    sampler = SMCSampler(config, eos)
    state = sampler.start(num_runs, length, seeds=torch.arange(num_runs) + seed * 1_000_003)
    none = torch.full((num_runs,), VOCAB)
    sampler.first_tokens(state, target.at(torch.zeros(num_runs, dtype=torch.int64), none, none))
    g = torch.Generator().manual_seed(seed)
    n, gamma = config.num_particles, config.gamma
    while not bool(state.group_finished.all()):
        prev2, prev1 = _last_two(state.tokens, state.lengths)
        pos = state.lengths.clone()
        drafts, log_q, target_logits = [], [], [target.at(pos, prev2, prev1)]
        for _ in range(gamma):
            q = torch.log_softmax(draft.at(pos, prev2, prev1) / config.draft_temperature, dim=-1)
            tok = torch.multinomial(q.exp().view(-1, VOCAB), 1, generator=g).view(num_runs, n)
            drafts.append(tok)
            log_q.append(q.gather(-1, tok.unsqueeze(-1)).squeeze(-1))
            prev2, prev1, pos = prev1, tok, pos + 1
            target_logits.append(target.at(pos, prev2, prev1))
        result = sampler.cycle(state, torch.stack(drafts, -1), torch.stack(log_q, -1), torch.stack(target_logits, 2))
        if trace is not None:
            trace.append(result)
    return sampler.finalize(state), state


def codes(sequences: torch.Tensor) -> torch.Tensor:
    """Integer code of each padded sequence [M, L] (PAD counts as its own symbol)."""
    digits = torch.where(sequences == PAD_TOKEN, VOCAB, sequences)
    powers = (VOCAB + 1) ** torch.arange(sequences.shape[1])
    return (digits * powers).sum(-1)


def pad_outputs(tokens: list[list[int]], length: int) -> torch.Tensor:
    out = torch.full((len(tokens), length), PAD_TOKEN, dtype=torch.int64)
    for i, t in enumerate(tokens):
        out[i, : len(t)] = torch.tensor(t[:length], dtype=torch.int64)
    return out


def _all_sequences(length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(VOCAB), repeat=length)), dtype=torch.int64)


def _sequence_log_probs(seqs: torch.Tensor, model_at: Callable[[int], ToyLM], temperature: float = 1.0) -> torch.Tensor:
    """Σ_t log softmax(z_t / T)[x_t] of every sequence, with position t scored by the model `model_at(t)`."""
    m = seqs.shape[0]
    logp = torch.zeros(m, dtype=torch.float64)
    prev2 = prev1 = torch.full((m,), VOCAB)
    for t in range(seqs.shape[1]):
        lp = torch.log_softmax(model_at(t).at(torch.full((m,), t), prev2, prev1) / temperature, -1)
        logp += lp.gather(-1, seqs[:, t : t + 1]).squeeze(-1)
        prev2, prev1 = prev1, seqs[:, t]
    return logp


def _law(coded: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    law = torch.zeros((VOCAB + 1) ** coded.shape[1], dtype=torch.float64)
    return law.index_add_(0, codes(coded), probs)


def exact_law(
    target: ToyLM, length: int, temperature: float = 1.0, alpha: float = 1.0, eos: tuple[int, ...] = ()
) -> torch.Tensor:
    """Probability of every sequence code under π ∝ Π p_T^α (EOS absorbing), as a dense vector over codes.

    With EOS, every full sequence keeps the probability of all its tokens and is coded with PAD after its first
    EOS; summing over the suffixes then gives the truncated sequence's probability (suffix laws sum to 1 at α=1).
    """
    if eos and alpha != 1:
        raise ValueError("the toy enumerates EOS-truncated laws at alpha = 1 only")
    seqs = _all_sequences(length)
    logp = alpha * _sequence_log_probs(seqs, lambda t: target, temperature)
    ended = torch.cumsum(torch.isin(seqs, torch.tensor(eos, dtype=torch.int64)).long(), 1)
    after_eos = torch.cat([torch.zeros((seqs.shape[0], 1), dtype=torch.long), ended[:, :-1]], 1) > 0
    return _law(torch.where(after_eos, PAD_TOKEN, seqs), torch.softmax(logp, 0))


def block_process_law(target: ToyLM, draft: ToyLM, length: int, gamma: int) -> torch.Tensor:
    """Law of the uncorrected process (N = 1): first token and every bonus from p, draft tokens from q."""

    def model_at(t: int) -> ToyLM:
        return target if t == 0 or (t - 1) % (gamma + 1) == gamma else draft

    seqs = _all_sequences(length)
    return _law(seqs, _sequence_log_probs(seqs, model_at).exp())


def empirical_law(sequences: torch.Tensor, size: int) -> torch.Tensor:
    counts = torch.bincount(codes(sequences), minlength=size).double()
    return counts / counts.sum()


def tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a - b).abs().sum())


def floor_tv(law: torch.Tensor, num_runs: int, seed: int = 0, repeats: int = 3) -> float:
    """Mean TV of `num_runs` exact samples from `law` to `law`: the Monte-Carlo floor any sampler sits on."""
    g = torch.Generator().manual_seed(10_000 + seed)
    values = []
    for _ in range(repeats):
        draws = torch.multinomial(law, num_runs, replacement=True, generator=g)
        values.append(tv(torch.bincount(draws, minlength=law.numel()).double() / num_runs, law))
    return sum(values) / len(values)


@pytest.fixture(scope="session")
def toy():
    """This module, so tests reach the helpers without importing a conftest by name."""
    return sys.modules[__name__]
