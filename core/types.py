"""Engine-neutral data exchanged between engines and the algorithms.

Tensors are batch-first: row *b* is one sequence (a request, or one particle of a request). Padded positions
hold `PAD_TOKEN` (-1). Engines translate their own batch layout into these types and back; the algorithms never
see an engine object. torch is imported only for type checking so that discovering plugins stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

PAD_TOKEN = -1

Role = Literal["proposer", "verifier", "memory", "method"]
Status = Literal["available", "experimental", "planned"]


class TokenVerdict(IntEnum):
    """What happened to one output position in a verify step."""

    EXACT = 0  # draft token accepted by the standard rule
    RESCUED = 1  # draft token rejected by the standard rule but accepted by a relaxed rule (CSD)
    CORRECTED = 2  # token sampled by the target in place of a rejected draft token
    BONUS = 3  # token sampled by the target after a fully accepted draft


@dataclass(frozen=True)
class RequestContext:
    """What an algorithm may know about a request. `tenant` keeps memories of different users apart."""

    request_id: str
    prompt_token_ids: Sequence[int]
    tenant: str = "default"
    sampling: Mapping[str, Any] = field(default_factory=dict)
    tools: Sequence[Mapping[str, Any]] | None = None


@dataclass
class DraftBatch:
    """Draft tokens for a batch: a chain per row, or a token tree when `parents` is given.

    tokens:  [B, K] long, PAD_TOKEN past `num_tokens[b]`.
    log_q:   [B, K] float, log-probability the drafter assigned to each token (None for deterministic drafters).
    probs:   [B, K, V] float, the drafter's full distribution at each position (needed by rejection sampling).
    parents: [B, K] long, index of each node's parent in the same row, -1 for children of the root (trees only).
    """

    tokens: torch.Tensor
    num_tokens: torch.Tensor
    log_q: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    parents: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def max_tokens(self) -> int:
        return int(self.tokens.shape[1])


@dataclass
class VerifyResult:
    """Outcome of verifying a DraftBatch against target logits.

    num_accepted: [B] draft tokens kept (exact + rescued), not counting the final corrected/bonus token.
    output_tokens: [B, K+1] tokens to commit, PAD_TOKEN past `num_accepted[b] + 1`.
    verdicts: [B, K+1] TokenVerdict codes aligned with output_tokens (PAD_TOKEN where padded).
    accepted_path: [B, K+1] node indices of the accepted tree path (trees only; chains use positions 0..n-1).
    """

    num_accepted: torch.Tensor
    output_tokens: torch.Tensor
    verdicts: torch.Tensor
    accepted_path: torch.Tensor | None = None

    @property
    def num_output(self) -> torch.Tensor:
        return self.num_accepted + 1


@dataclass
class StepOutcome:
    """What observers hear after each verify step, batched. Optional fields are filled by methods that have them."""

    request_ids: Sequence[str]
    num_proposed: torch.Tensor
    num_accepted: torch.Tensor
    num_rescued: torch.Tensor | None = None
    ess: torch.Tensor | None = None
    resampled: torch.Tensor | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInfo:
    """One thing a plugin offers, as `specplug doctor` lists it. Status is honest: planned means not built yet."""

    name: str
    role: Role
    status: Status
    summary: str
    display: str = ""  # how users and messages name it ("SMC-SD"); the name when empty
    reads_request_tools: bool = False  # drafts from a chat request's `tools`: servers must pass them through


@dataclass(frozen=True)
class PluginInfo:
    """A plugin's self-description: which engine it joins and what it provides."""

    name: str
    engine: str | None
    methods: tuple[MethodInfo, ...]
    summary: str


@runtime_checkable
class Proposer(Protocol):
    """Drafts tokens for a batch of sequences. `contexts` are the committed token ids per row: lists, or numpy rows
    of the engine's token buffer (valid during the call only) for a proposer whose class sets `accepts_arrays`."""

    def propose(self, contexts: Sequence[Sequence[int]], **kwargs: Any) -> DraftBatch: ...


@runtime_checkable
class Verifier(Protocol):
    """Decides which draft tokens to keep given the target's logits at every draft position plus one.

    target_logits: [B, K+1, V] — position j scores the token after draft prefix of length j.
    Hosts also pass `request_ids` (the request of each row), so a verifier with per-tenant state can find it.
    """

    def verify(self, draft: DraftBatch, target_logits: torch.Tensor, **kwargs: Any) -> VerifyResult: ...
