"""ToolSpec's suffix-tree retrieval: ArcticInference's `SuffixDecodingCache` (what vLLM's `suffix` method drafts
from), called, not reimplemented.

A cache holds one suffix tree per active request over its prompt and answer so far, and one global tree over
answers; `speculate` matches the context's suffix in both and returns the frequency-scored best continuation,
as long as `max_spec_factor` × the match length and cut where a token's estimated probability falls under
`min_token_prob`. ToolSpec keeps one cache per tenant (`SuffixTrees`, owned by the tenant's
`InvocationMemory`, so its global tree holds that tenant's answers only and is evicted with them) and a private
cache without a global tree for a request that shares nothing. Keys are ints this module allocates, never
engine request ids: a reused engine id must not evict an earlier answer from the tree.

`retrieval` = "suffix" needs the package (`bash scripts/install-suffix.sh`); "lookup" is the pure-Python
n-gram index and prompt lookup; "auto" takes the suffix trees when the package imports.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from specplug.core.errors import ConfigError
from specplug.core.proposers.prompt_lookup import lookup

MODES = ("auto", "suffix", "lookup")
INSTALL = "bash scripts/install-suffix.sh"


def suffix_available() -> bool:
    """Whether ArcticInference's suffix decoding imports here (its native module included)."""
    if importlib.util.find_spec("arctic_inference") is None:
        return False
    try:
        from arctic_inference.suffix_decoding import SuffixDecodingCache  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_retrieval(mode: str) -> str:
    """The retrieval a drafter runs ("suffix" or "lookup") for the `retrieval` setting `mode`; "suffix" without the
    package is refused at startup, naming the install command."""
    if mode not in MODES:
        raise ConfigError("retrieval", mode, f"one of {', '.join(MODES)}", method="toolspec")
    if mode == "lookup":
        return "lookup"
    if suffix_available():
        return "suffix"
    if mode == "suffix":
        allowed = f"auto or lookup: arctic_inference.suffix_decoding is not installed (install it: {INSTALL})"
        raise ConfigError("retrieval", mode, allowed, method="toolspec")
    return "lookup"


@dataclass(frozen=True)
class SuffixParams:
    """vLLM's suffix defaults: tree depth 24, draft at most 1.0 × the match length, tokens of probability >= 0.1."""

    depth: int = 24
    factor: float = 1.0
    min_prob: float = 0.1


@dataclass
class SuffixDraft:
    tokens: list[int]
    score: float
    match_len: int
    probs: list[float] | None = None  # estimated probability that the draft is right up to each token (cumulative)


class SuffixTrees:
    """One `SuffixDecodingCache`: a tenant's (`shared`: answers stay in its global tree when their request closes)
    or one private request's (no global tree). Not thread-safe: a tenant's memory bank holds the lock."""

    def __init__(self, params: SuffixParams, *, shared: bool = True) -> None:
        from arctic_inference.suffix_decoding import SuffixDecodingCache

        self.params = params
        self.cache = SuffixDecodingCache(max_tree_depth=params.depth, max_cached_requests=-1 if shared else 0)
        self._next_key = 0

    def open(self, prompt: Sequence[int]) -> int:
        """Start a request: its prompt becomes its own tree; its answer will join the global tree as it grows."""
        key = self._key()
        self.cache.start_request(key, [int(t) for t in prompt])
        return key

    def extend(self, key: int, tokens: Sequence[int]) -> None:
        """Committed answer tokens of an open request."""
        if tokens:
            self.cache.add_active_response(key, [int(t) for t in tokens])

    def close(self, key: int, *, keep: bool) -> None:
        """End a request; its answer stays in the global tree only if `keep`."""
        if key in self.cache.active_requests:
            self.cache.stop_request(key)
        if not keep:
            self.evict(key)

    def insert(self, answer: Sequence[int]) -> int:
        """Put a finished answer (a loaded memory's) into the global tree; its key evicts it."""
        key = self.open([])
        self.extend(key, answer)
        self.close(key, keep=True)
        return key

    def evict(self, key: int) -> None:
        if key in self.cache.cached_requests:
            self.cache.evict_cached_response(key)

    def speculate(self, key: int, context: Sequence[int], max_tokens: int) -> SuffixDraft:
        """The best continuation of `context` from the request's own tree or the global tree, as vLLM's suffix
        method drafts it (the last `depth` tokens are the pattern)."""
        p = self.params
        draft: Any = self.cache.speculate(
            key, self._pattern(context), max_spec_tokens=max_tokens, max_spec_factor=p.factor, min_token_prob=p.min_prob
        )
        return _draft(draft)

    def speculate_each(
        self, key: int, context: Sequence[int], max_tokens: int
    ) -> tuple[SuffixDraft, SuffixDraft] | None:
        """(the request's own tree's draft, the global tree's draft) from this one cache — what `speculate` picks
        between, with its source — or None where the installed arctic-inference does not expose its trees (the
        version `scripts/install-suffix.sh` pins does). One request's own tree here equals its private cache's, so
        a tenant's request needs no second cache lookup."""
        cache = self.cache
        local = getattr(cache, "_local_trees", {}).get(key)
        shared = getattr(cache, "_global_tree", None)
        if local is None or shared is None:
            return None
        p = self.params
        args = (self._pattern(context), max_tokens, p.factor, 0.0, p.min_prob, False)
        return _draft(type(local).speculate(local, *args)), _draft(type(shared).speculate(shared, *args))

    def _pattern(self, context: Sequence[int]) -> list[int]:
        """What a lookup matches: the context's last `depth` tokens, as Python ints."""
        return [int(t) for t in context[-self.params.depth :]]

    def _key(self) -> int:
        key, self._next_key = self._next_key, self._next_key + 1
        return key


def _draft(native: Any) -> SuffixDraft:
    return SuffixDraft(list(native.token_ids), float(native.score), int(native.match_len), list(native.probs))


def own_match(sequence: Sequence[int], n_min: int, n_max: int, k: int) -> tuple[int, list[int]]:
    """Prompt lookup (`core.proposers.prompt_lookup.lookup`: never the trivial self-match) with the length of the
    suffix it matched, which caps an adaptive draft; (0, []) when no suffix of at least `n_min` tokens recurs."""
    context = np.asarray(sequence, dtype=np.int64)
    found = lookup(context, n_min, n_max, k)
    if not found.size:
        return 0, []
    low, high = n_min, n_max  # a match of `low` tokens exists; find the longest by bisection
    while low < high:
        mid = (low + high + 1) // 2
        if lookup(context, mid, n_max, 1).size:
            low = mid
        else:
            high = mid - 1
    return low, found.tolist()
