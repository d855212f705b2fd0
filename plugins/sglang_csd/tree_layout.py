"""SGLang's NGRAM verify-tree layout ↔ specplug's `DraftBatch` / `VerifyResult`, as whole-batch tensor ops.

SGLang (0.5.23) lays one request's tree out as `n = draft_token_num` nodes in BFS order, node 0 being the root (the
last committed token, not a draft), with the draft tokens flat in `draft_token: [bs*n]` and the structure as links
(`sglang/kernels/ops/speculative/reconstruct_tree.py` docstring, lines 21-30):
- `retrieve_index[b, i] = b*n + i` (the row of node i in the flat logits and `predict`),
- `retrieve_next_token[b, i]` = first child of i, or -1,
- `retrieve_next_sibling[b, i]` = next child of i's parent, or -1.
Target logits row `b*n + i` scores the children of node i — exactly specplug's tree layout shifted by one
(specplug node j = SGLang node j + 1; `target_logits[b, 0]` scores the root's children).

The verify result SGLang expects back (`verify_tree_greedy_kernel_triton`, `sglang/kernels/ops/speculative/
spec_tree.py:211-314`): `accept_index[b, 0..m]` the flat rows of the root and the m accepted nodes (-1 after),
`predict[accept_index[b, j]]` the token committed after that node (so the accepted tokens and then the correction
or bonus token), zeros elsewhere, and `accept_lens = m + 1`.

SGLang pads a tree with fewer candidates than n with token-0 leaves hung on the root
(`sglang/kernels/jit/csrc/ngram_corpus/result.cpp:35-39`, `fillResult`). Those are not drafts: CSD must neither
rescue them nor count their mismatches, so `draft_batch_from_sglang` leaves the trailing run of such nodes out.
"""

from __future__ import annotations

import torch

from specplug.core.types import DraftBatch, VerifyResult


def parents_from_links(next_token: torch.Tensor, next_sibling: torch.Tensor) -> torch.Tensor:
    """Parent of every node [B, n] in SGLang numbering (the root has -1), from first-child / next-sibling links."""
    batch, n = next_token.shape
    next_token, next_sibling = next_token.to(torch.int64), next_sibling.to(torch.int64)
    parent = torch.full((batch, n), -1, dtype=torch.int64, device=next_token.device)
    rows, nodes = (next_token >= 0).nonzero(as_tuple=True)
    parent[rows, next_token[rows, nodes]] = nodes
    for _ in range(n):  # a sibling chain is at most n - 1 long
        rows, nodes = ((parent >= 0) & (next_sibling >= 0)).nonzero(as_tuple=True)
        updated = parent.clone()
        updated[rows, next_sibling[rows, nodes]] = parent[rows, nodes]
        if torch.equal(updated, parent):
            break
        parent = updated
    orphans = (parent[:, 1:] < 0).nonzero()
    if len(orphans):
        b, i = orphans[0].tolist()
        raise ValueError(f"SGLang tree links leave node {i + 1} of row {b} unreachable from the root")
    if bool((parent[:, 1:] >= torch.arange(1, n, device=parent.device)).any()):
        raise ValueError("SGLang tree is not in BFS order (a node precedes its parent)")
    return parent


def links_from_parents(parent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `parents_from_links`: (retrieve_next_token, retrieve_next_sibling) [B, n], SGLang's semantics
    (first child = lowest-index child, next sibling = next higher-index child of the same parent)."""
    n = parent.shape[1]
    index = torch.arange(n, device=parent.device)
    is_child = parent.unsqueeze(1) == index.view(1, n, 1)  # [B, i, k]: k is a child of i
    none = torch.full_like(is_child, n, dtype=torch.int64)
    first = torch.where(is_child, index.view(1, 1, n), none).amin(dim=2)
    next_token = torch.where(first < n, first, -1)
    same_parent = (parent.unsqueeze(2) == parent.unsqueeze(1)) & (parent.unsqueeze(2) >= 0)  # [B, i, k]
    later = index.view(1, 1, n) > index.view(1, n, 1)
    sibling = torch.where(same_parent & later, index.view(1, 1, n), none).amin(dim=2)
    next_sibling = torch.where(sibling < n, sibling, -1)
    return next_token, next_sibling


def trailing_padding(tokens: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    """[B] length of the trailing run of SGLang's padding nodes (token 0, child of the root, no children), in
    specplug numbering (`tokens`, `parents` [B, K])."""
    batch, k = tokens.shape
    has_child = torch.zeros((batch, k + 1), dtype=torch.bool, device=tokens.device)
    has_child.scatter_(1, parents + 1, torch.ones_like(parents, dtype=torch.bool))
    pad_like = (tokens == 0) & (parents == -1) & ~has_child[:, 1:]
    return pad_like.flip(1).to(torch.int64).cumprod(dim=1).sum(dim=1)


def draft_batch_from_sglang(
    candidates: torch.Tensor,
    next_token: torch.Tensor,
    next_sibling: torch.Tensor,
    eligible: torch.Tensor | None = None,
    *,
    drop_padding: bool = True,
) -> DraftBatch:
    """specplug's view of SGLang's verify tree: `candidates` [B, n] (root first), links [B, n].

    Rows where `eligible` is False get no draft tokens (nothing judged, nothing learned); trailing padding nodes are
    dropped unless `drop_padding=False` (tests compare the raw layout with SGLang's kernel).
    """
    parent = parents_from_links(next_token, next_sibling)
    tokens = candidates[:, 1:].to(torch.int64)
    parents = parent[:, 1:] - 1  # SGLang's root (0) becomes specplug's -1
    k = tokens.shape[1]
    num_tokens = torch.full((tokens.shape[0],), k, dtype=torch.int64, device=tokens.device)
    if drop_padding:
        num_tokens = num_tokens - trailing_padding(tokens, parents)
    if eligible is not None:
        num_tokens = torch.where(eligible.to(torch.bool), num_tokens, 0)
    return DraftBatch(tokens=tokens, num_tokens=num_tokens, parents=parents)


def sglang_outputs(
    result: VerifyResult, retrieve_index: torch.Tensor, dtype: torch.dtype = torch.int32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(predict [B*n], accept_lens [B], accept_index [B, n]) in SGLang's layout from a tree VerifyResult."""
    if result.accepted_path is None:
        raise ValueError("a tree VerifyResult (with accepted_path) is needed")
    batch, n = retrieve_index.shape
    num = result.num_accepted.to(torch.int64)
    slot = torch.arange(n, device=retrieve_index.device).unsqueeze(0)
    live = slot <= num.unsqueeze(1)
    path = result.accepted_path[:, : n - 1].to(torch.int64)
    nodes = torch.cat([torch.zeros_like(path[:, :1]), path + 1], dim=1)  # SGLang node of output slot j
    nodes = torch.where(live, nodes, 0)
    rows = retrieve_index.to(torch.int64).gather(1, nodes)
    accept_index = torch.where(live, rows, -1).to(dtype)
    predict = torch.zeros(batch * n, dtype=dtype, device=retrieve_index.device)
    predict[rows[live]] = result.output_tokens[:, :n][live].to(dtype)
    return predict, (num + 1).to(dtype), accept_index
