"""Reference runner on a tiny random Llama: speculative greedy equals autoregressive greedy exactly."""

from __future__ import annotations

import torch

from specplug.core.proposers.draft_model import DraftModelProposer
from specplug.core.proposers.ngram import NgramProposer
from specplug.core.types import DraftBatch
from specplug.reference.runner import ReferenceRunner


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    # Repetitive prompts of different lengths so n-gram lookup finds matches and rows advance unevenly.
    base = [torch.randint(1, 97, (n,), generator=gen).tolist() for n in (5, 9, 3, 12)]
    return [b * 3 for b in base]


def _plain_greedy(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def test_batched_ar_matches_uncached_single_sequence_greedy(tiny_llama) -> None:
    prompts = _prompts()
    got = ReferenceRunner(tiny_llama).generate(prompts, 12)
    assert got.tokens == [_plain_greedy(tiny_llama, p, 12) for p in prompts]
    assert got.stats.target_forwards == 12 and got.stats.output_tokens == 48
    assert got.stats.target_forwards_per_token == 1.0


def test_speculative_greedy_equals_ar_with_ngram_and_draft_model(tiny_llama) -> None:
    prompts = _prompts()
    runner = ReferenceRunner(tiny_llama)
    ar = runner.generate(prompts, 24)
    ngram = runner.generate(prompts, 24, proposer=NgramProposer(num_speculative_tokens=3, prompt_lookup_min=1))
    draft = runner.generate(prompts, 24, proposer=DraftModelProposer(tiny_llama, num_speculative_tokens=3))
    assert ngram.tokens == ar.tokens
    assert draft.tokens == ar.tokens
    # The target itself as drafter: every draft is accepted, 4 tokens per forward after the first step.
    assert draft.stats.acceptance_rate == 1.0
    assert draft.stats.target_forwards < ar.stats.target_forwards / 3
    assert draft.stats.target_forwards_per_token < 0.35 and draft.stats.mean_accepted_length > 3.5
    assert ngram.stats.proposed > 0


class _WrongProposer:
    """Always drafts token 0: everything is rejected, output must still equal AR."""

    def propose(self, contexts, **_):
        n = len(contexts)
        return DraftBatch(tokens=torch.zeros((n, 4), dtype=torch.int64), num_tokens=torch.full((n,), 4))


def test_rejected_drafts_leave_no_trace_in_the_cache(tiny_llama) -> None:
    prompts = _prompts()
    runner = ReferenceRunner(tiny_llama)
    ar = runner.generate(prompts, 16)
    bad = runner.generate(prompts, 16, proposer=_WrongProposer())
    assert bad.tokens == ar.tokens
    assert bad.stats.proposed > 0 and bad.stats.accepted < bad.stats.proposed


def test_eos_and_budget_stop_each_row(tiny_llama) -> None:
    prompts = _prompts()
    ar = ReferenceRunner(tiny_llama).generate(prompts, 10)
    eos = ar.tokens[1][4]
    stopped = ReferenceRunner(tiny_llama, eos_token_ids=[eos]).generate(prompts, 10)
    assert stopped.tokens[1] == ar.tokens[1][: ar.tokens[1].index(eos) + 1]
    assert all(len(t) <= 10 for t in stopped.tokens)


def test_sampling_is_reproducible_per_seed(tiny_llama) -> None:
    prompts = _prompts()
    runner = ReferenceRunner(tiny_llama)
    a = runner.generate(prompts, 8, temperature=1.0, seed=5)
    b = runner.generate(prompts, 8, temperature=1.0, seed=5)
    c = runner.generate(prompts, 8, temperature=1.0, seed=6)
    assert a.tokens == b.tokens and a.tokens != c.tokens
