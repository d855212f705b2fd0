"""SGLang tree layout ↔ specplug DraftBatch, and the calibrated verdict in SGLang's layout.

Engine-free: SGLang's tree is built here the way its n-gram corpus builds it (`StandInCorpusTree`, a port of
`fillResult` in sglang/kernels/jit/csrc/ngram_corpus/result.cpp) and SGLang's greedy tree verification is
`standin_verify_tree_greedy`, a loop-for-loop port of `verify_tree_greedy_kernel_triton`
(sglang/kernels/ops/speculative/spec_tree.py:211-314). test_csd_sglang_kernel_oracle.py checks both stand-ins
against SGLang's real code.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from specplug.core.csd.config import CSDConfig
from specplug.core.types import TokenVerdict
from specplug.core.verifiers.greedy_tree import GreedyTreeVerifier
from specplug.plugins.sglang_csd.runtime import CSDRuntime
from specplug.plugins.sglang_csd.settings import CSDSettings
from specplug.plugins.sglang_csd.tree_layout import (
    draft_batch_from_sglang,
    links_from_parents,
    parents_from_links,
    sglang_outputs,
    trailing_padding,
)
from specplug.plugins.sglang_csd.verify_hook import activated, calibrated_eagle_sample


@dataclass
class StandInCorpusTree:
    """One request's verify tree as SGLang's n-gram corpus emits it: BFS order, root first, token-0 padding."""

    tokens: list[int]
    prevs: list[int]  # parent per node, -1 for the root; padding hangs on the root

    @classmethod
    def random(cls, rng: random.Random, n: int, vocab: int, real: int | None = None) -> StandInCorpusTree:
        real = rng.randint(0, n - 1) if real is None else real
        tokens, prevs = [rng.randrange(1, vocab)], [-1]
        children: dict[int, set[int]] = {}
        for i in range(1, real + 1):
            # BFS: parents never decrease along the node order
            parent = rng.randint(max(prevs[-1], 0), i - 1) if i > 1 else 0
            used = children.setdefault(parent, set())
            choices = [t for t in range(1, vocab) if t not in used]
            token = rng.choice(choices)
            used.add(token)
            tokens.append(token)
            prevs.append(parent)
        while len(tokens) < n:  # result.cpp:35-39
            tokens.append(0)
            prevs.append(0)
        return cls(tokens, prevs)

    def mask(self) -> torch.Tensor:
        n = len(self.tokens)
        mask = torch.zeros((n, n), dtype=torch.bool)
        for i, prev in enumerate(self.prevs):
            if prev >= 0:
                mask[i] = mask[prev]
            mask[i, i] = True
        return mask


def standin_verify_tree_greedy(
    candidates: torch.Tensor,
    retrieve_index: torch.Tensor,
    next_token: torch.Tensor,
    next_sibling: torch.Tensor,
    target_predict: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(predict [bs*n], accept_index [bs, n], num_correct [bs]) exactly as SGLang's greedy tree kernel."""
    bs, n = candidates.shape
    flat_target = target_predict.reshape(-1)
    predict = torch.zeros(bs * n, dtype=torch.int32)
    accept_index = torch.full((bs, n), -1, dtype=torch.int32)
    num = torch.zeros(bs, dtype=torch.int32)
    for b in range(bs):
        last = int(retrieve_index[b, 0])
        accept_index[b, 0] = last
        cur, accepted = 0, 0
        for _ in range(1, n):
            cur = int(next_token[b, cur])
            target = int(flat_target[last])
            found = False
            while cur != -1:
                if int(candidates[b, cur]) == target:
                    predict[last] = target
                    accepted += 1
                    accept_index[b, accepted] = int(retrieve_index[b, cur])
                    last = int(retrieve_index[b, cur])
                    found = True
                    break
                cur = int(next_sibling[b, cur])
            if not found:
                break
        num[b] = accepted
        predict[last] = int(flat_target[last])
    return predict, accept_index, num


def sglang_batch(trees: list[StandInCorpusTree]) -> SimpleNamespace:
    """A verify input in SGLang's layout (NgramVerifyInput's fields) for these trees."""
    bs, n = len(trees), len(trees[0].tokens)
    parent = torch.tensor([t.prevs for t in trees])
    next_token, next_sibling = links_from_parents(parent)
    return SimpleNamespace(
        draft_token=torch.tensor([t.tokens for t in trees]).reshape(-1),
        retrieve_index=torch.arange(bs * n).view(bs, n),
        retrieve_next_token=next_token,
        retrieve_next_sibling=next_sibling,
        draft_token_num=n,
    )


def tree_logits(rng: random.Random, trees: list[StandInCorpusTree], vocab: int, hit: float = 0.7) -> torch.Tensor:
    """[bs*n, V] logits whose arg-max after a node is often one of its children (so paths get accepted)."""
    gen = torch.Generator().manual_seed(rng.randrange(1 << 30))
    n = len(trees[0].tokens)
    logits = torch.randn((len(trees) * n, vocab), generator=gen)
    for b, tree in enumerate(trees):
        for i in range(n):
            kids = [tree.tokens[k] for k in range(n) if tree.prevs[k] == i]
            if kids and rng.random() < hit:
                logits[b * n + i, rng.choice(kids)] += 6.0
    return logits


def sglang_greedy(verify: SimpleNamespace, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The greedy branch of SGLang's eagle_sample (eagle_utils.py:641-660, 840-852): arg-max + tree kernel."""
    n = verify.draft_token_num
    bs = verify.retrieve_index.shape[0]
    target_predict = logits.argmax(dim=-1).reshape(bs, n)
    predict, accept_index, num = standin_verify_tree_greedy(
        verify.draft_token.reshape(bs, n),
        verify.retrieve_index,
        verify.retrieve_next_token,
        verify.retrieve_next_sibling,
        target_predict,
    )
    return predict, num + 1, accept_index


def random_case(seed: int, bs: int = 4, n: int = 8, vocab: int = 12):
    rng = random.Random(seed)
    trees = [StandInCorpusTree.random(rng, n, vocab) for _ in range(bs)]
    return trees, sglang_batch(trees), tree_logits(rng, trees, vocab)


# --- links and parents --------------------------------------------------------------------------------------


def test_parents_from_links_on_a_hand_made_tree() -> None:
    #   0 ─┬─ 1 ─┬─ 3
    #      │     └─ 4 ── 6
    #      └─ 2 ── 5
    parent = torch.tensor([[-1, 0, 0, 1, 1, 2, 4]])
    next_token, next_sibling = links_from_parents(parent)
    assert next_token.tolist() == [[1, 3, 5, -1, 6, -1, -1]]
    assert next_sibling.tolist() == [[-1, 2, -1, 4, -1, -1, -1]]
    assert torch.equal(parents_from_links(next_token, next_sibling), parent)


@pytest.mark.parametrize("seed", range(20))
def test_links_round_trip_on_corpus_trees(seed: int) -> None:
    rng = random.Random(seed)
    trees = [StandInCorpusTree.random(rng, 10, 6) for _ in range(3)]
    parent = torch.tensor([t.prevs for t in trees])
    assert torch.equal(parents_from_links(*links_from_parents(parent)), parent)


def test_unreachable_or_unordered_trees_are_refused() -> None:
    with pytest.raises(ValueError, match="unreachable"):
        parents_from_links(torch.tensor([[1, -1, -1]]), torch.tensor([[-1, -1, -1]]))
    with pytest.raises(ValueError, match="BFS order"):  # node 1's parent is node 2
        parents_from_links(torch.tensor([[2, -1, 1]]), torch.tensor([[-1, -1, -1]]))


def test_trailing_padding_counts_only_the_tail_run() -> None:
    tree = StandInCorpusTree([7, 3, 0, 5, 0, 0], [-1, 0, 0, 1, 0, 0])  # node 2 is a real token-0 leaf, not tail
    draft = draft_batch_from_sglang(
        torch.tensor([tree.tokens]), *links_from_parents(torch.tensor([tree.prevs])), drop_padding=False
    )
    assert trailing_padding(draft.tokens, draft.parents).tolist() == [2]
    dropped = draft_batch_from_sglang(torch.tensor([tree.tokens]), *links_from_parents(torch.tensor([tree.prevs])))
    assert dropped.num_tokens.tolist() == [3]
    assert dropped.parents.tolist() == [[-1, -1, 0, -1, -1]]


def test_ineligible_rows_get_no_draft_tokens() -> None:
    _, verify, _ = random_case(0, bs=3)
    cands = verify.draft_token.view(3, -1)
    draft = draft_batch_from_sglang(
        cands, verify.retrieve_next_token, verify.retrieve_next_sibling, torch.tensor([True, False, True])
    )
    assert int(draft.num_tokens[1]) == 0


# --- verdicts in SGLang's layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_greedy_verdict_converted_equals_sglang_greedy(seed: int) -> None:
    """Layout round trip: specplug's greedy tree verifier on the converted tree, converted back, is SGLang's."""
    trees, verify, logits = random_case(seed)
    bs, n = len(trees), verify.draft_token_num
    draft = draft_batch_from_sglang(
        verify.draft_token.view(bs, n), verify.retrieve_next_token, verify.retrieve_next_sibling, drop_padding=False
    )
    ours = sglang_outputs(GreedyTreeVerifier().verify(draft, logits.view(bs, n, -1)), verify.retrieve_index)
    for got, want in zip(ours, sglang_greedy(verify, logits), strict=True):
        assert torch.equal(got, want)


def test_padding_acceptance_matches_sglang() -> None:
    """The target's arg-max after the root is 0: SGLang accepts the first padding leaf (one bonus more)."""
    tree = StandInCorpusTree([9, 3, 4, 0, 0], [-1, 0, 0, 0, 0])
    verify = sglang_batch([tree])
    logits = torch.zeros((5, 10))
    logits[0, 0] = 5.0  # after the root: token 0
    logits[3, 7] = 5.0  # after the first padding node: token 7
    want = sglang_greedy(verify, logits)
    assert want[1].tolist() == [2]
    draft = draft_batch_from_sglang(
        verify.draft_token.view(1, 5), verify.retrieve_next_token, verify.retrieve_next_sibling, drop_padding=False
    )
    got = sglang_outputs(GreedyTreeVerifier().verify(draft, logits.view(1, 5, -1)), verify.retrieve_index)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


# --- the runtime's merge and memory ---------------------------------------------------------------------------


def runtime(**config: object) -> CSDRuntime:
    # the layout's mechanics, as a single-tenant deployment runs them (stand-in batches carry no requests)
    return CSDRuntime(CSDSettings(config=CSDConfig(**{"tenants": "shared", **config})))


def calibrate(rt: CSDRuntime, verify: SimpleNamespace, logits: torch.Tensor, greedy_rows: torch.Tensor | None = None):
    bs, n = verify.retrieve_index.shape
    predict, lens, index = sglang_greedy(verify, logits)
    return rt.calibrate(
        candidates=verify.draft_token.view(bs, n),
        retrieve_index=verify.retrieve_index,
        retrieve_next_token=verify.retrieve_next_token,
        retrieve_next_sibling=verify.retrieve_next_sibling,
        logits=logits,
        greedy_rows=greedy_rows,
        predict=predict,
        accept_lens=lens,
        accept_index=index,
    )


@pytest.mark.parametrize("config", [{"lam": math.inf, "tau": 0.001}, {"lam": 1, "tau": 1.0}])
@pytest.mark.parametrize("seed", range(15))
def test_no_rescue_settings_return_sglangs_verdict(config: dict, seed: int) -> None:
    _, verify, logits = random_case(seed)
    rt = runtime(**config)
    for got, want in zip(calibrate(rt, verify, logits), sglang_greedy(verify, logits), strict=True):
        assert torch.equal(got, want)
    assert rt.rescued_tokens == 0 and rt.extra_tokens == 0


def test_a_rescue_extends_the_path_in_sglangs_layout() -> None:
    # root 9 ─ 3 ─ 4 ; the target prefers 5 after the root but 3 is close (gap ln 0.5 ≥ ln 0.1): rescued.
    tree = StandInCorpusTree([9, 3, 4, 0], [-1, 0, 1, 0])
    verify = sglang_batch([tree])
    logits = torch.full((4, 10), -10.0)
    logits[0, 5], logits[0, 3] = 0.0, math.log(0.5)
    logits[1, 4] = 0.0  # after 3: 4, accepted exactly
    logits[2, 8] = 0.0  # after 4: bonus 8
    rt = runtime(lam=1, tau=0.1)
    predict, lens, index = calibrate(rt, verify, logits)
    assert lens.tolist() == [3] and index.tolist() == [[0, 1, 2, -1]]
    assert predict.tolist() == [3, 4, 8, 0]
    assert rt.rescued_tokens == 1 and rt.extra_tokens == 2
    assert [p.tolist() for p, _ in rt.pending] == [[[3, 5]]]  # the (draft, target) mismatch, not yet learned
    assert len(rt.memory) == 0 and rt.commit() == 1 and rt.memory.top(1) == [(3, 5, 1)]


def test_memory_threshold_and_step_snapshot() -> None:
    """λ = 2: the first mismatch of a pair is only learned; the next step (after commit) rescues it."""
    tree = StandInCorpusTree([9, 3, 4, 0], [-1, 0, 1, 0])
    verify = sglang_batch([tree])
    logits = torch.full((4, 10), -10.0)
    logits[0, 5], logits[0, 3], logits[1, 4], logits[2, 8] = 0.0, -1.0, 0.0, 0.0
    rt = runtime(lam=2, tau=0.1)
    assert calibrate(rt, verify, logits)[1].tolist() == [1]
    rt.commit()
    assert calibrate(rt, verify, logits)[1].tolist() == [3]


def test_offline_memory_is_never_updated() -> None:
    tree = StandInCorpusTree([9, 3, 4, 0], [-1, 0, 1, 0])
    verify = sglang_batch([tree])
    logits = torch.full((4, 10), -10.0)
    logits[0, 5] = 0.0
    rt = runtime(lam=2, online=False)
    calibrate(rt, verify, logits)
    assert rt.commit() == 0 and len(rt.memory) == 0


def test_only_greedy_rows_are_calibrated() -> None:
    tree = StandInCorpusTree([9, 3, 4, 0], [-1, 0, 1, 0])
    verify = sglang_batch([tree, tree])
    logits = torch.full((8, 10), -10.0)
    for b in range(2):
        logits[4 * b, 5], logits[4 * b, 3], logits[4 * b + 1, 4] = 0.0, -1.0, 0.0
    rt = runtime(lam=1, tau=0.1)
    _, lens, _ = calibrate(rt, verify, logits, greedy_rows=torch.tensor([False, True]))
    assert lens.tolist() == [1, 3]
    assert rt.calibrated_rows == 1 and sum(len(p) for p, _ in rt.pending) == 1


def test_padding_is_never_rescued_nor_learned() -> None:
    # Only padding below the root; the target wants 5, token 0 (padding) is close: no rescue, nothing learned.
    tree = StandInCorpusTree([9, 0, 0, 0], [-1, 0, 0, 0])
    verify = sglang_batch([tree])
    logits = torch.full((4, 10), -10.0)
    logits[0, 5], logits[0, 0] = 0.0, -0.1
    rt = runtime(lam=1, tau=0.01)
    _, lens, _ = calibrate(rt, verify, logits)
    assert lens.tolist() == [1] and rt.pending == []


# --- the hook's routing (no HookRegistry here; see test_csd_sglang_verify_hook.py) ----------------------------


class StandInAlgo:
    def __init__(self, name: str) -> None:
        self.name = name


def hook_call(algo: str, rt: CSDRuntime | None, seed: int = 3):
    trees, verify, logits = random_case(seed)
    batch = SimpleNamespace(
        spec_algorithm=StandInAlgo(algo), sampling_info=SimpleNamespace(top_ks=torch.ones(len(trees)))
    )
    out = SimpleNamespace(next_token_logits=logits)
    calls = []

    def original(v, b, lo, grammar_mask=None, *, watermark_state=None):
        calls.append(1)
        return sglang_greedy(v, lo.next_token_logits)

    if rt is None:
        return calibrated_eagle_sample(original, verify, batch, out, None, watermark_state=None), calls
    with activated(rt):
        return calibrated_eagle_sample(original, verify, batch, out, None, watermark_state=None), calls


def test_hook_passes_through_without_an_active_csd_worker_or_for_other_algorithms() -> None:
    rt = runtime(lam=1, tau=0.001)
    for algo, active in (("CSD", None), ("NGRAM", rt), ("EAGLE", rt)):
        _, calls = hook_call(algo, active)
        assert calls == [1]
    assert rt.steps == 0


def test_hook_calibrates_for_csd_and_falls_back_on_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    rt = runtime(lam=1, tau=0.001)
    (_, lens, _), calls = hook_call("CSD", rt)
    assert calls == [1] and rt.steps == 1
    baseline = hook_call("NGRAM", rt)[0][1]
    assert bool((lens >= baseline).all())

    def boom(**_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(rt, "calibrate", boom)
    rt.pending.append(torch.tensor([[1, 2]]))
    (_, lens, _), _ = hook_call("CSD", rt)
    assert torch.equal(lens, baseline) and rt.failures == 1 and rt.pending == []


def test_verdicts_mark_rescues() -> None:
    """The core verifier's RESCUED verdict is what the runtime counts."""
    tree = StandInCorpusTree([9, 3, 4, 0], [-1, 0, 1, 0])
    verify = sglang_batch([tree])
    logits = torch.full((4, 10), -10.0)
    logits[0, 5], logits[0, 3], logits[1, 4] = 0.0, -1.0, 0.0
    draft = draft_batch_from_sglang(
        verify.draft_token.view(1, 4), verify.retrieve_next_token, verify.retrieve_next_sibling
    )
    result = runtime(lam=1, tau=0.1).verifier.verify(draft, logits.view(1, 4, -1))
    assert result.verdicts[0, :2].tolist() == [TokenVerdict.RESCUED, TokenVerdict.EXACT]
