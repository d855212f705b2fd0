"""Greedy token-tree verification: accept the deepest tree path whose every node equals the target's arg-max
at its parent; commit that path plus the target's arg-max after it.

Tree layout (per row): node i has token `tokens[b, i]` and parent `parents[b, i]` (-1 = child of the root,
parents precede children). `target_logits[b, 0]` scores the children of the root and `target_logits[b, i + 1]`
the children of node i — what one forward with a tree attention mask gives. Work is a few whole-batch tensor
ops per tree level, never a loop over requests or tokens.
"""

from __future__ import annotations

import torch

from specplug.core.types import PAD_TOKEN, DraftBatch, TokenVerdict, VerifyResult
from specplug.core.verifiers._chain import positions_mask


def _along_parents(values: torch.Tensor, parents: torch.Tensor, root_value: torch.Tensor) -> torch.Tensor:
    """values[parents], with `root_value` where the parent is the root."""
    return torch.where(parents >= 0, values.gather(1, parents.clamp_min(0)), root_value)


class GreedyTreeVerifier:
    name = "greedy_tree"

    def verify(self, draft: DraftBatch, target_logits: torch.Tensor, **_: object) -> VerifyResult:
        if draft.parents is None:
            raise ValueError("tree verification needs DraftBatch.parents")
        batch, k = draft.tokens.shape
        parents = draft.parents
        if bool((parents >= torch.arange(k, device=parents.device)).any()):
            raise ValueError("tree nodes must come after their parents (parents[b, i] < i)")
        valid = positions_mask(draft.num_tokens, k)
        best = target_logits.argmax(dim=-1)  # [B, K+1]
        ok = (draft.tokens == best.gather(1, parents + 1)) & valid

        accepted, depth = ok, torch.ones_like(parents)
        true, zero = torch.ones_like(ok), torch.zeros_like(parents)
        for _ in range(k):  # one tree level per pass; stops when every path is resolved
            new_accepted = ok & _along_parents(accepted, parents, true)
            new_depth = 1 + _along_parents(depth, parents, zero)
            if torch.equal(new_accepted, accepted) and torch.equal(new_depth, depth):
                break
            accepted, depth = new_accepted, new_depth

        # Deepest accepted node; ties go to the lowest index (duplicate siblings).
        index = torch.arange(k, device=parents.device).expand(batch, k)
        score = torch.where(accepted, depth * (k + 1) + (k - index), torch.zeros_like(depth))
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
        verdicts = torch.where(pos < num_accepted.unsqueeze(1), TokenVerdict.EXACT, PAD_TOKEN).to(torch.int64)
        last_verdict = torch.where(leaf, TokenVerdict.BONUS, TokenVerdict.CORRECTED).to(torch.int64)
        verdicts.scatter_(1, num_accepted.unsqueeze(1), last_verdict.unsqueeze(1))
        return VerifyResult(num_accepted=num_accepted, output_tokens=out, verdicts=verdicts, accepted_path=path)
