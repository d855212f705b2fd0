"""Greedy token-tree verification: accept the deepest tree path whose every node equals the target's arg-max
at its parent; commit that path plus the target's arg-max after it.

Tree layout (per row): node i has token `tokens[b, i]` and parent `parents[b, i]` (-1 = child of the root,
parents precede children). `target_logits[b, 0]` scores the children of the root and `target_logits[b, i + 1]`
the children of node i — what one forward with a tree attention mask gives. Work is a few whole-batch tensor
ops per tree level, never a loop over requests or tokens.

`resolve_tree` is the part every tree verifier shares: given which nodes pass their own acceptance rule, it
finds the accepted paths and assembles the committed tokens. CSD's calibrated tree verifier reuses it with a
wider rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specplug.core.types import PAD_TOKEN, DraftBatch, TokenVerdict, VerifyResult
from specplug.core.verifiers._chain import positions_mask


def _along_parents(values: torch.Tensor, parents: torch.Tensor, root_value: torch.Tensor) -> torch.Tensor:
    """values[parents], with `root_value` where the parent is the root."""
    return torch.where(parents >= 0, values.gather(1, parents.clamp_min(0)), root_value)


def check_tree(draft: DraftBatch) -> torch.Tensor:
    """Validate the tree layout; return the [B, K] mask of real (non-padded) nodes."""
    if draft.parents is None:
        raise ValueError("tree verification needs DraftBatch.parents")
    k = draft.max_tokens
    if bool((draft.parents >= torch.arange(k, device=draft.parents.device)).any()):
        raise ValueError("tree nodes must come after their parents (parents[b, i] < i)")
    return positions_mask(draft.num_tokens, k)


@dataclass
class TreeResolution:
    result: VerifyResult
    reached: torch.Tensor  # [B, K] nodes whose whole ancestry passed (they were judged on the live path)


def resolve_tree(
    draft: DraftBatch, best: torch.Tensor, ok: torch.Tensor, rescued: torch.Tensor | None = None
) -> TreeResolution:
    """Accept the deepest node whose ancestors and itself all pass `ok`; ties go to fewer `rescued` nodes on the
    path, then to the lowest index (duplicate siblings). `best` [B, K+1] is the target's arg-max per position."""
    assert draft.parents is not None
    batch, k = draft.tokens.shape
    parents = draft.parents
    valid = positions_mask(draft.num_tokens, k)
    ok = ok & valid
    soft = (rescued & ok) if rescued is not None else torch.zeros_like(ok)

    accepted, depth, cost = ok, torch.ones_like(parents), soft.to(torch.int64)
    true, zero = torch.ones_like(ok), torch.zeros_like(parents)
    for _ in range(k):  # one tree level per pass; stops when every path is resolved
        new_accepted = ok & _along_parents(accepted, parents, true)
        new_depth = 1 + _along_parents(depth, parents, zero)
        new_cost = soft.to(torch.int64) + _along_parents(cost, parents, zero)
        if torch.equal(new_accepted, accepted) and torch.equal(new_depth, depth) and torch.equal(new_cost, cost):
            break
        accepted, depth, cost = new_accepted, new_depth, new_cost
    reached = valid & _along_parents(accepted, parents, true)

    index = torch.arange(k, device=parents.device).expand(batch, k)
    width = k + 1
    score = torch.where(accepted, (depth * width + (k - cost)) * width + (k - index), torch.zeros_like(depth))
    chosen = score.argmax(dim=1)
    num_accepted = torch.where(score.amax(dim=1) > 0, depth.gather(1, chosen.unsqueeze(1)).squeeze(1), 0)

    # Walk up from the chosen node, writing the path from its leaf end.
    rows = torch.arange(batch, device=parents.device)
    path = torch.full((batch, k + 1), PAD_TOKEN, dtype=torch.int64, device=parents.device)
    node, slot = chosen.clone(), num_accepted - 1
    for _ in range(int(num_accepted.max())):
        live = slot >= 0
        path[rows[live], slot[live]] = node[live]
        node = parents.gather(1, node.unsqueeze(1)).squeeze(1).clamp_min(0)
        slot = slot - 1
    node_tokens = torch.cat([draft.tokens, draft.tokens.new_full((batch, 1), PAD_TOKEN)], dim=1)
    out = torch.where(path >= 0, node_tokens.gather(1, path.clamp_min(0)), PAD_TOKEN)
    last_pos = torch.where(num_accepted > 0, chosen + 1, 0)
    last = best.gather(1, last_pos.unsqueeze(1)).squeeze(1)
    out.scatter_(1, num_accepted.unsqueeze(1), last.unsqueeze(1))

    children = torch.zeros((batch, k + 1), dtype=torch.int64, device=parents.device)
    children.scatter_add_(1, (parents + 1).masked_fill(~valid, 0), valid.to(torch.int64))
    leaf = children.gather(1, last_pos.unsqueeze(1)).squeeze(1) == 0
    pos = torch.arange(k + 1, device=parents.device).unsqueeze(0)
    node_soft = torch.cat([soft, soft.new_zeros((batch, 1))], dim=1).gather(1, path.clamp_min(0))
    kept = pos < num_accepted.unsqueeze(1)
    verdicts = torch.where(node_soft, TokenVerdict.RESCUED, TokenVerdict.EXACT).to(torch.int64)
    verdicts = torch.where(kept, verdicts, PAD_TOKEN)
    last_verdict = torch.where(leaf, TokenVerdict.BONUS, TokenVerdict.CORRECTED).to(torch.int64)
    verdicts.scatter_(1, num_accepted.unsqueeze(1), last_verdict.unsqueeze(1))
    result = VerifyResult(num_accepted=num_accepted, output_tokens=out, verdicts=verdicts, accepted_path=path)
    return TreeResolution(result=result, reached=reached)


class GreedyTreeVerifier:
    name = "greedy_tree"

    def verify(self, draft: DraftBatch, target_logits: torch.Tensor, **_: object) -> VerifyResult:
        valid = check_tree(draft)
        assert draft.parents is not None
        best = target_logits.argmax(dim=-1)  # [B, K+1]
        ok = (draft.tokens == best.gather(1, draft.parents + 1)) & valid
        return resolve_tree(draft, best, ok).result
