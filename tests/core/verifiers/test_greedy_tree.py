"""Greedy tree verification against a brute-force reference on random trees (fixed seed)."""

from __future__ import annotations

import torch

from specplug.core.types import DraftBatch
from specplug.core.verifiers.greedy_chain import GreedyChainVerifier
from specplug.core.verifiers.greedy_tree import GreedyTreeVerifier


def _brute_force(tokens: list[int], parents: list[int], n: int, best: list[int]) -> tuple[list[int], int]:
    """Enumerate every root-to-node path; keep the deepest fully matching one (lowest index on ties)."""
    best_path: list[int] = []
    for node in range(n):
        path, cur = [], node
        while cur >= 0:
            path.append(cur)
            cur = parents[cur]
        path.reverse()
        ok = all(tokens[i] == best[parents[i] + 1] for i in path)
        if ok and len(path) > len(best_path):
            best_path = path
    last = best[best_path[-1] + 1] if best_path else best[0]
    return [tokens[i] for i in best_path] + [last], len(best_path)


def test_matches_brute_force_on_random_trees() -> None:
    gen = torch.Generator().manual_seed(0)
    batch, k, vocab = 64, 8, 3  # tiny vocab: many matches and duplicate siblings
    parents = torch.full((batch, k), -1, dtype=torch.int64)
    for i in range(1, k):
        parents[:, i] = torch.randint(-1, i, (batch,), generator=gen)
    tokens = torch.randint(0, vocab, (batch, k), generator=gen)
    num = torch.randint(0, k + 1, (batch,), generator=gen)
    logits = torch.randn(batch, k + 1, vocab, generator=gen)
    out = GreedyTreeVerifier().verify(DraftBatch(tokens, num, parents=parents), logits)
    best = logits.argmax(-1)
    lengths = []
    for b in range(batch):
        want, n_acc = _brute_force(tokens[b].tolist(), parents[b].tolist(), int(num[b]), best[b].tolist())
        assert out.num_accepted[b] == n_acc, b
        assert out.output_tokens[b, : n_acc + 1].tolist() == want, b
        lengths.append(n_acc)
    assert max(lengths) >= 2  # the test exercised real multi-level paths


def test_a_chain_tree_equals_the_chain_verifier() -> None:
    gen = torch.Generator().manual_seed(1)
    batch, k, vocab = 32, 5, 2
    tokens = torch.randint(0, vocab, (batch, k), generator=gen)
    num = torch.randint(0, k + 1, (batch,), generator=gen)
    logits = torch.randn(batch, k + 1, vocab, generator=gen)
    chain_parents = (torch.arange(k) - 1).expand(batch, k)
    tree = GreedyTreeVerifier().verify(DraftBatch(tokens, num, parents=chain_parents), logits)
    chain = GreedyChainVerifier().verify(DraftBatch(tokens, num), logits)
    assert torch.equal(tree.num_accepted, chain.num_accepted)
    assert torch.equal(tree.output_tokens, chain.output_tokens)
    assert torch.equal(tree.verdicts, chain.verdicts)
