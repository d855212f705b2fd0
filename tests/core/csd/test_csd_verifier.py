"""CSD's calibrated verifier: exact reduction to greedy SD, the rule's two gates, the λ threshold, and a
sequential oracle written from the paper's pseudo-code (fixed seeds)."""

from __future__ import annotations

import math

import pytest
import torch

from specplug.core.csd.config import CSDConfig
from specplug.core.csd.memory import CorrectionMemory
from specplug.core.csd.verifier import CalibratedChainVerifier, CalibratedTreeVerifier
from specplug.core.types import PAD_TOKEN, DraftBatch, TokenVerdict
from specplug.core.verifiers.greedy_chain import GreedyChainVerifier
from specplug.core.verifiers.greedy_tree import GreedyTreeVerifier


def _random_case(seed: int, batch: int = 48, k: int = 6, vocab: int = 5):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, k + 1, vocab, generator=gen) * 2
    best = logits.argmax(-1)
    # Drafts agree with the target about half the time, so chains are long enough to exercise later positions.
    agree = torch.rand(batch, k, generator=gen) < 0.5
    tokens = torch.where(agree, best[:, :k], torch.randint(0, vocab, (batch, k), generator=gen))
    num = torch.randint(0, k + 1, (batch,), generator=gen)
    tokens = torch.where(torch.arange(k) < num.unsqueeze(1), tokens, PAD_TOKEN)
    return DraftBatch(tokens, num), logits


def _filled_memory(vocab: int, seed: int) -> CorrectionMemory:
    gen = torch.Generator().manual_seed(seed)
    memory = CorrectionMemory()
    d, t = torch.randint(0, vocab, (400,), generator=gen), torch.randint(0, vocab, (400,), generator=gen)
    memory.observe(d, t)
    return memory


@pytest.mark.parametrize("config", [CSDConfig(lam=math.inf, tau=0.01), CSDConfig(lam=1, tau=1.0)])
def test_reduces_to_greedy_chain_token_for_token(config: CSDConfig) -> None:
    for seed in range(5):
        draft, logits = _random_case(seed)
        want = GreedyChainVerifier().verify(draft, logits)
        got = CalibratedChainVerifier(_filled_memory(5, seed), config).verify(draft, logits)
        assert torch.equal(got.num_accepted, want.num_accepted)
        assert torch.equal(got.output_tokens, want.output_tokens)
        assert torch.equal(got.verdicts, want.verdicts)
        assert int(got.num_rescued.sum()) == 0


def _one_position(draft_token: int, logits_row: list[float], next_best: int, vocab: int = 4):
    """A 2-token draft: position 0 is judged with `logits_row`; position 1 agrees with the target (`next_best`)."""
    logits = torch.full((1, 3, vocab), -5.0)
    logits[0, 0] = torch.tensor(logits_row)
    logits[0, 1, next_best] = 5.0
    logits[0, 2, 3] = 5.0
    return DraftBatch(torch.tensor([[draft_token, next_best]]), torch.tensor([2])), logits


def test_only_count_or_only_gap_gives_no_rescue_both_give_a_rescue() -> None:
    close, far = [2.0, 2.0 + math.log(0.5), -1, -1], [2.0, 2.0 + math.log(0.001), -1, -1]  # d=1 vs t=0
    config = CSDConfig(lam=3, tau=0.01)

    def run(row, prior: int):
        memory = CorrectionMemory()
        memory.observe(torch.ones(prior, dtype=torch.int64), torch.zeros(prior, dtype=torch.int64))
        draft, logits = _one_position(1, row, next_best=2)
        return CalibratedChainVerifier(memory, config).verify(draft, logits), memory

    count_only, _ = run(far, prior=5)
    gap_only, _ = run(close, prior=1)  # 1 earlier + this one = 2 < λ
    both, memory = run(close, prior=2)  # 2 earlier + this one = λ
    assert count_only.output_tokens[0, :1].tolist() == [0] and count_only.num_accepted.item() == 0
    assert gap_only.output_tokens[0, :1].tolist() == [0] and gap_only.num_accepted.item() == 0
    # Rescued at 0, then position 1 is judged by its own logits (which agree), then the bonus from position 2.
    assert both.num_accepted.item() == 2
    assert both.output_tokens[0].tolist() == [1, 2, 3]
    assert both.verdicts[0].tolist() == [TokenVerdict.RESCUED, TokenVerdict.EXACT, TokenVerdict.BONUS]
    # The rescued mismatch was still counted.
    assert memory.counts(torch.tensor([1]), torch.tensor([0])).item() == 3


def test_threshold_is_crossed_exactly_at_lambda() -> None:
    lam = 4
    verifier = CalibratedChainVerifier(CorrectionMemory(), CSDConfig(lam=lam, tau=0.01))
    draft, logits = _one_position(1, [2.0, 1.5, -1, -1], next_best=2)
    rescued_at = [int(verifier.verify(draft, logits).num_rescued.item()) for _ in range(lam + 2)]
    assert rescued_at == [0] * (lam - 1) + [1, 1, 1]  # the λ-th rejection of the pair is the first rescue


def _sequential_oracle(tokens, num, logits, counts: dict, lam: float, tau: float):
    """The paper's loop, one row at a time; counts are read as they were before the step (snapshot)."""
    out, learned = [], []
    for b in range(len(tokens)):
        z, n, row = logits[b], 0, []
        for i in range(num[b]):
            t = int(z[i].argmax())
            d = tokens[b][i]
            if d == t:
                row.append(d)
                n += 1
                continue
            learned.append((d, t))
            if counts.get((d, t), 0) + 1 >= lam and float(z[i][d] - z[i][t]) >= math.log(tau):
                row.append(d)
                n += 1
                continue
            break
        row.append(int(z[n].argmax()))
        out.append((n, row))
    return out, learned


def test_vectorized_chain_matches_the_sequential_oracle() -> None:
    for seed in range(6):
        draft, logits = _random_case(seed, vocab=4)
        memory = _filled_memory(4, seed + 100)
        before = {(d, t): c for d, t, c in memory.top(100)}
        got = CalibratedChainVerifier(memory, CSDConfig(lam=25, tau=0.2)).verify(draft, logits)
        want, learned = _sequential_oracle(
            draft.tokens.tolist(), draft.num_tokens.tolist(), logits, before, lam=25, tau=0.2
        )
        for b, (n, row) in enumerate(want):
            assert got.num_accepted[b].item() == n, (seed, b)
            assert got.output_tokens[b, : n + 1].tolist() == row, (seed, b)
        assert int(got.num_rescued.sum()) > 0  # the case exercised rescues
        after = {(d, t): c for d, t, c in memory.top(100)}
        for pair in set(before) | set(after) | set(learned):
            assert after.get(pair, 0) == before.get(pair, 0) + learned.count(pair), pair


def test_tree_reduces_to_greedy_tree_and_prefers_exact_paths() -> None:
    gen = torch.Generator().manual_seed(0)
    batch, k, vocab = 64, 8, 3
    parents = torch.full((batch, k), -1, dtype=torch.int64)
    for i in range(1, k):
        parents[:, i] = torch.randint(-1, i, (batch,), generator=gen)
    draft = DraftBatch(torch.randint(0, vocab, (batch, k), generator=gen), torch.full((batch,), k), parents=parents)
    logits = torch.randn(batch, k + 1, vocab, generator=gen)
    want = GreedyTreeVerifier().verify(draft, logits)
    got = CalibratedTreeVerifier(_filled_memory(vocab, 1), CSDConfig(lam=math.inf)).verify(draft, logits)
    assert torch.equal(got.output_tokens, want.output_tokens) and torch.equal(got.accepted_path, want.accepted_path)

    # Root children: node 0 = target's choice (exact), node 1 = a rescuable near-miss; each has one child that
    # the target accepts. Equal depth: the exact path wins. Remove node 0's child: the rescued path is deeper.
    logits = torch.full((1, 5, 4), -5.0)
    logits[0, 0, 0], logits[0, 0, 1] = 2.0, 1.9
    logits[0, 1, 2] = logits[0, 2, 3] = logits[0, 3, 0] = logits[0, 4, 0] = 5.0
    tree = DraftBatch(torch.tensor([[0, 1, 2, 3]]), torch.tensor([4]), parents=torch.tensor([[-1, -1, 0, 1]]))
    memory = CorrectionMemory()
    memory.observe(torch.tensor([1] * 9), torch.tensor([0] * 9))
    verifier = CalibratedTreeVerifier(memory, CSDConfig(lam=2, tau=0.01))
    got = verifier.verify(tree, logits)
    assert got.output_tokens[0].tolist()[:3] == [0, 2, 0] and got.num_rescued.item() == 0
    tree.tokens[0, 2] = 1  # node 0's child now mismatches
    got = verifier.verify(tree, logits)
    assert got.output_tokens[0].tolist()[:3] == [1, 3, 0] and got.num_rescued.item() == 1
    assert got.verdicts[0, :3].tolist() == [TokenVerdict.RESCUED, TokenVerdict.EXACT, TokenVerdict.BONUS]


def test_finite_lambda_without_memory_is_refused_early() -> None:
    from specplug.core.csd.verifier import rescue_rule
    from specplug.core.errors import ConfigError

    with pytest.raises(ValueError, match="needs a correction memory"):
        rescue_rule(torch.zeros(1, 1, dtype=torch.int64), torch.zeros(1, 1, 3), None, CSDConfig(lam=3))
    for bad in ({"lam": 0}, {"lam": 2.5}, {"tau": 0}, {"tau": 1.5}, {"gamma": 0}, {"lamda": 6}):
        with pytest.raises(ConfigError):
            CSDConfig.from_mapping(bad)
    assert CSDConfig.from_mapping({"lam": "inf"}).lam == math.inf
