"""CSD's calibrated greedy verification, for chains and token trees.

A draft token d judged where the target's arg-max is t ≠ d is *rescued* (kept, and verification goes on) when
both hold:
- the pair (d, t) has been rejected at least λ times, this rejection included: the memory counted it at least
  λ − 1 times before this verify step (the paper's loop counts the mismatch first, then tests the count);
- its logit is within ln τ of the top one: z[d] − z[t] ≥ ln τ, on raw logits, so p(d)/p(t) ≥ τ at T=1.
Otherwise t is committed as the correction and the step ends. Later positions are scored with logits already
conditioned on the rescued token, because the target's forward ran along the drafted path.

Every mismatch on the live path is counted, rescued or not (counting only unrescued ones would starve the pairs
CSD relies on). All decisions of one step read the memory as it was when the step began; the step's mismatches
are added afterwards, as one batched update. λ = ∞ (or τ = 1, up to exact logit ties) is standard greedy SD,
token for token.

Membership of (d, t) in the rescuable set is one `torch.isin` over the whole batch against a sorted key tensor
that the memory rebuilds only when a pair crosses the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from specplug.core.csd.config import CSDConfig
from specplug.core.csd.memory import CorrectionMemory
from specplug.core.csd.tenants import TenantMemories, frequent_pairs
from specplug.core.types import PAD_TOKEN, DraftBatch, TokenVerdict, VerifyResult
from specplug.core.verifiers._chain import assemble, leading_true, positions_mask
from specplug.core.verifiers.greedy_tree import check_tree, resolve_tree


@dataclass
class CalibratedVerifyResult(VerifyResult):
    """VerifyResult plus what the memory learns from this step.

    mismatches: [M, 2] int64 (draft, target) pairs judged on the live path where the draft differed.
    mismatch_rows: [M] int64, the batch row of each mismatch (its request's tenant learns it: `core.csd.tenants`).
    num_rescued: [B] rescued tokens among the accepted ones.
    """

    mismatches: torch.Tensor | None = None
    mismatch_rows: torch.Tensor | None = None
    num_rescued: torch.Tensor | None = None


def rescue_rule(
    tokens: torch.Tensor,
    logits: torch.Tensor,
    memory: CorrectionMemory | Sequence[CorrectionMemory] | None,
    config: CSDConfig,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For draft tokens [B, K] scored by logits [B, K, V]: (best [B, K], exact [B, K], rescue [B, K]).

    `rescue` is the CSD predicate alone (mismatch ∧ frequent pair ∧ within ln τ); callers combine it with
    validity and with the path structure. `memory` may be one per row (tenants), with `rows` giving each token's
    row when `tokens` is not [B, K].
    """
    best = logits.argmax(dim=-1)
    exact = tokens == best
    if not config.rescues:
        return best, exact, torch.zeros_like(exact)
    safe = tokens.clamp_min(0).unsqueeze(-1)
    gap = logits.gather(-1, safe).squeeze(-1).float() - logits.gather(-1, best.unsqueeze(-1)).squeeze(-1).float()
    close = gap >= math.log(config.tau)
    need = int(config.lam) - 1  # prior observations needed: this one makes λ
    if need <= 0:
        frequent = torch.ones_like(exact)
    else:
        if memory is None:
            raise ValueError("CSD with a finite λ needs a correction memory")
        if rows is None and tokens.dim() == 2:
            rows = torch.arange(tokens.shape[0], device=tokens.device).unsqueeze(1).expand_as(tokens)
        frequent = frequent_pairs(tokens, best, memory, need, rows)
    return best, exact, ~exact & close & frequent


class _Calibrated:
    def __init__(
        self, memory: CorrectionMemory | None = None, config: CSDConfig | None = None, *, update_memory: bool = True
    ) -> None:
        self.config = config or CSDConfig()
        self.memory = memory if memory is not None else CorrectionMemory(self.config.max_pairs)
        self.update_memory = update_memory
        self.bank: Any = None  # the namespaced bank `memory` belongs to, when it came from one
        self.tenants: TenantMemories | None = None  # inside a host: which memory each request reads

    def load_memory(self, path: str) -> Any:
        """Read a memory file (refused with `DataFileError` if bad) and verify with it from now on."""
        from specplug.core.csd.bank import CorrectionMemoryBank

        bank = CorrectionMemoryBank.load(path, self.config.max_pairs)
        self.bank, self.memory = bank, bank.memory(self.config.namespace)
        if self.tenants is not None:  # requests in flight keep their tenants; tenants learn on the new file's
            self.tenants = self.tenants.rebind(bank)
        return bank

    def _reading(self, request_ids: Sequence[str] | None) -> CorrectionMemory | list[CorrectionMemory]:
        """The memory of each row: its request's tenant's when the host named the rows, else the session's."""
        if self.tenants is None or request_ids is None:
            return self.memory
        return self.tenants.reading(request_ids)

    def _learn(
        self, result: CalibratedVerifyResult, tokens: torch.Tensor, best: torch.Tensor, judged: torch.Tensor
    ) -> CalibratedVerifyResult:
        """Record the step's judged mismatches (and their rows) in `result`; a verifier outside a host counts them
        in its memory itself."""
        pairs = torch.stack([tokens[judged], best[judged]], dim=1).to(torch.int64)
        if self.update_memory and pairs.numel():
            self.memory.observe(pairs[:, 0], pairs[:, 1])
        result.mismatches, result.mismatch_rows = pairs, judged.nonzero()[:, 0]
        return result


def resolve_chain(
    tokens: torch.Tensor,
    num_tokens: torch.Tensor,
    best: torch.Tensor,
    exact: torch.Tensor,
    rescue: torch.Tensor,
    bonus: torch.Tensor,
) -> tuple[CalibratedVerifyResult, torch.Tensor]:
    """Chain decisions from per-position verdicts, without touching logits (so engines with a flat token layout
    can call it after padding only [B, K] tensors): accepted prefix, committed tokens ending with the correction
    `best[b, n]` or, after a fully accepted chain, `bonus[b]`. Also returns the [B, K] mask of judged mismatches.
    """
    k = tokens.shape[1]
    valid = positions_mask(num_tokens, k)
    num_accepted = leading_true((exact | rescue) & valid)
    at = num_accepted.clamp_max(max(k - 1, 0)).unsqueeze(1)
    correction = best.gather(1, at).squeeze(1) if k else bonus
    last = torch.where(num_accepted < num_tokens, correction, bonus)
    out, verdicts = assemble(tokens, num_tokens, num_accepted, last)
    rescued = positions_mask(num_accepted, k) & rescue
    verdicts[:, :k] = torch.where(rescued, TokenVerdict.RESCUED, verdicts[:, :k])
    judged = positions_mask(num_accepted + 1, k) & valid & ~exact
    result = CalibratedVerifyResult(
        num_accepted=num_accepted, output_tokens=out, verdicts=verdicts, num_rescued=rescued.sum(dim=1)
    )
    return result, judged


class CalibratedChainVerifier(_Calibrated):
    """Calibrated greedy verification of one draft chain per row."""

    name = "csd"
    flat_layout = True  # engines with a flat token layout (vLLM) may pass [T, V] logits: see `verify_flat`

    def verify(
        self,
        draft: DraftBatch,
        target_logits: torch.Tensor,
        *,
        layout: str = "padded",
        bonus: torch.Tensor | None = None,
        request_ids: Sequence[str] | None = None,
        **_: object,
    ) -> CalibratedVerifyResult:
        if layout == "flat":
            if bonus is None:
                raise ValueError("CSD: the flat layout needs the bonus tokens")
            return self.verify_flat(draft, target_logits, bonus, request_ids)
        k = draft.max_tokens
        memory = self._reading(request_ids)
        best, exact, rescue = rescue_rule(draft.tokens, target_logits[:, :k], memory, self.config)
        bonus = target_logits.argmax(dim=-1).gather(1, draft.num_tokens.unsqueeze(1)).squeeze(1)
        result, judged = resolve_chain(draft.tokens, draft.num_tokens, best, exact, rescue, bonus)
        return self._learn(result, draft.tokens, best, judged)

    def verify_flat(
        self,
        draft: DraftBatch,
        flat_logits: torch.Tensor,
        bonus: torch.Tensor,
        request_ids: Sequence[str] | None = None,
    ) -> CalibratedVerifyResult:
        """The same rule on an engine's flat layout: `flat_logits` [T, V] score the T = Σ num_tokens draft tokens
        row after row (no bonus positions), `bonus` [B] is the token after a fully accepted chain. Only [B, K]
        verdicts are padded, never the logits (what vLLM would otherwise copy)."""
        num, k = draft.num_tokens.to(torch.int64), draft.max_tokens
        valid = positions_mask(num, k)
        flat_tokens = draft.tokens[valid]
        memory = self._reading(request_ids)
        rows = None if not isinstance(memory, list) else valid.nonzero()[:, 0]
        best_flat, exact_flat, rescue_flat = rescue_rule(flat_tokens, flat_logits, memory, self.config, rows)
        best = torch.zeros_like(draft.tokens)
        exact = torch.zeros_like(valid)
        rescue = torch.zeros_like(valid)
        best[valid], exact[valid], rescue[valid] = best_flat, exact_flat, rescue_flat
        tokens = torch.where(valid, draft.tokens, PAD_TOKEN)
        result, judged = resolve_chain(tokens, num, best, exact, rescue, bonus.to(torch.int64))
        return self._learn(result, tokens, best, judged)


class CalibratedTreeVerifier(_Calibrated):
    """Calibrated greedy verification of a token tree per row (layout of `greedy_tree`).

    A node passes when it equals the arg-max at its parent or is rescued there; the deepest passing path wins,
    and between equally deep paths the one with fewer rescues (then the lowest index). Mismatches are counted at
    every node whose ancestors all passed — the nodes the target actually judged on a live path.
    """

    name = "csd_tree"

    def verify(
        self,
        draft: DraftBatch,
        target_logits: torch.Tensor,
        request_ids: Sequence[str] | None = None,
        **_: object,
    ) -> CalibratedVerifyResult:
        check_tree(draft)
        assert draft.parents is not None
        scoring = target_logits.gather(
            1, (draft.parents + 1).unsqueeze(-1).expand(-1, -1, target_logits.shape[-1])
        )  # [B, K, V]: the logits each node is judged by
        node_best, exact, rescue = rescue_rule(draft.tokens, scoring, self._reading(request_ids), self.config)
        resolved = resolve_tree(draft, target_logits.argmax(dim=-1), exact | rescue, rescued=rescue)
        result = resolved.result
        calibrated = CalibratedVerifyResult(
            num_accepted=result.num_accepted,
            output_tokens=result.output_tokens,
            verdicts=result.verdicts,
            accepted_path=result.accepted_path,
            num_rescued=(result.verdicts == TokenVerdict.RESCUED).sum(dim=1),
        )
        return self._learn(calibrated, draft.tokens, node_best, resolved.reached & ~exact)
