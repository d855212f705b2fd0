"""ToolSpec's retrieval memory: earlier answers, searched by suffix, kept apart per tenant.

Tool-calling traffic repeats itself (the same tools with similar arguments), so the tokens that followed the
current suffix in an earlier answer are good drafts. An n-gram index maps every `match_min`-gram of a stored
answer to where it ends; a lookup tries the longest suffix first (`match_max` down to `match_min`) and, among
equally long matches, the most recent answer. Drafts never affect output under greedy verification, but they do
reveal earlier answers' tokens to whoever's request they are drafted for (acceptance and latency are a timing
side channel), so every tenant has its own memory and a lookup only ever sees the caller's tenant. The anonymous
tenant (`core.host.ANONYMOUS_TENANT`, a request no deployment-controlled field names) has no memory at all.

Bounded, and no tenant can push another out: each tenant keeps at most `tokens_per_tenant` tokens (its own oldest
answers evicted first); the bank holds at most `max_tenants` tenants, and when it is full a *new* tenant is
refused (`admit` is False, its answers are not stored, `refused_admissions` counts it) while every established
tenant keeps its memory. Files: `core.persist` (data only, checksummed, atomic).

With `suffix` parameters (`retrieval` = "suffix", `core.toolspec.retrieval`) every tenant's memory also keeps its
answers in the global tree of its own `SuffixDecodingCache`, evicted together with the answers; a loaded memory
rebuilds the trees from the stored answers, so the file format does not change.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from specplug.core.errors import ConfigError
from specplug.core.host import ANONYMOUS_TENANT
from specplug.core.persist import DataFileError, overlapping, prompt_digest, read_data_file, write_data_file
from specplug.core.toolspec.retrieval import SuffixDraft, SuffixParams, SuffixTrees

KIND = "toolspec-invocation-memory"
VERSION = 1
MAX_CANDIDATES = 64  # index hits checked per lookup (most recent first)


class InvocationMemory:
    """One tenant's answers and their n-gram index. Not thread-safe on its own: the bank holds the lock."""

    def __init__(self, match_min: int, match_max: int, max_tokens: int, suffix: SuffixParams | None = None) -> None:
        self.match_min, self.match_max, self.max_tokens = match_min, match_max, max_tokens
        self._answers: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self.trees: SuffixTrees | None = None
        self._tree_keys: dict[int, int] = {}  # answer id -> its key in `trees`
        self.build_trees(suffix)
        self._index: dict[tuple[int, ...], list[tuple[int, int]]] = {}  # gram -> [(answer id, end position)]
        self._next_id = 0
        self.tokens = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._answers)

    def add(self, answer: Sequence[int], tree_key: int | None = None) -> bool:
        """Store an answer (False: too short to continue from, or larger than the whole budget). `tree_key`: the
        open request of `trees` that grew this answer (it is kept there, or evicted if the answer is not stored)."""
        answer = tuple(int(t) for t in answer)
        if len(answer) <= self.match_min or len(answer) > self.max_tokens:
            if self.trees is not None and tree_key is not None:
                self.trees.close(tree_key, keep=False)
            return False
        key, self._next_id = self._next_id, self._next_id + 1
        self._answers[key] = answer
        if self.trees is not None:
            if tree_key is None:
                tree_key = self.trees.insert(answer)
            else:
                self.trees.close(tree_key, keep=True)
            self._tree_keys[key] = tree_key
        self.tokens += len(answer)
        n = self.match_min
        for end in range(n, len(answer)):  # a gram ending at the last token has no continuation
            self._index.setdefault(answer[end - n : end], []).append((key, end))
        while self.tokens > self.max_tokens:
            self._evict_oldest()
        return True

    def _evict_oldest(self) -> None:
        key, answer = self._answers.popitem(last=False)
        self.tokens -= len(answer)
        self.evicted += 1
        if self.trees is not None:
            self.trees.evict(self._tree_keys.pop(key))
        n = self.match_min
        for end in range(n, len(answer)):
            gram = answer[end - n : end]
            hits = [h for h in self._index.get(gram, ()) if h[0] != key]
            if hits:
                self._index[gram] = hits
            else:
                self._index.pop(gram, None)

    def continuations(self, context: Sequence[int], length: int, limit: int = 1) -> list[list[int]]:
        """Up to `limit` distinct continuations (longest suffix match first, then the most recent answer)."""
        return [tokens for _, tokens in self.matches(context, length, limit)]

    def matches(self, context: Sequence[int], length: int, limit: int = 1) -> list[tuple[int, list[int]]]:
        """Like `continuations`, each with the length of the suffix it matched."""
        n_min = self.match_min
        if length < 1 or len(context) < n_min:
            return []
        hits = self._index.get(tuple(int(t) for t in context[-n_min:]))
        if not hits:
            return []
        scored = []
        longest = min(self.match_max, len(context))
        for rank, (key, end) in enumerate(reversed(hits[-MAX_CANDIDATES:])):
            answer = self._answers[key]
            matched = n_min
            while matched < longest and end - matched - 1 >= 0 and answer[end - matched - 1] == context[-matched - 1]:
                matched += 1
            scored.append((-matched, rank, answer[end : end + length]))
        scored.sort(key=lambda s: (s[0], s[1]))
        out: list[tuple[int, list[int]]] = []
        for negative, _, tokens in scored:
            tokens = list(tokens)
            if tokens and not any(o[: len(tokens)] == tokens for _, o in out):
                out.append((-negative, tokens))
            if len(out) == limit:
                break
        return out

    def answers(self) -> list[list[int]]:
        return [list(a) for a in self._answers.values()]

    def build_trees(self, suffix: SuffixParams | None) -> None:
        """(Re)build the suffix trees from the stored answers, oldest first (None: no trees)."""
        self.trees = SuffixTrees(suffix) if suffix is not None else None
        self._tree_keys = {}
        if self.trees is not None:
            self._tree_keys = {key: self.trees.insert(answer) for key, answer in self._answers.items()}


class InvocationMemoryBank:
    """All tenants' memories, bounded in tenants (new ones refused when full, nobody evicted); thread-safe (engines
    may draft and finish on different threads)."""

    def __init__(
        self,
        *,
        match_min: int = 3,
        match_max: int = 7,
        tokens_per_tenant: int = 200_000,
        max_tenants: int = 1_000,
        suffix: SuffixParams | None = None,
    ) -> None:
        if not 1 <= match_min <= match_max:
            raise ConfigError("match_min", match_min, f"an integer in [1, match_max={match_max}]", method="toolspec")
        self.match_min, self.match_max = match_min, match_max
        self.suffix = suffix  # per-tenant suffix trees with these parameters (None: the n-gram index only)
        self.tokens_per_tenant, self.max_tenants = tokens_per_tenant, max_tenants
        self._tenants: OrderedDict[str, InvocationMemory] = OrderedDict()
        self._lock = threading.Lock()
        self.refused_admissions = 0  # times a new tenant was turned away because the bank was full
        self.source_prompts: set[str] = set()  # digests of the prompts whose answers were stored

    def _memory(self, tenant: str, create: bool) -> InvocationMemory | None:
        memory = self._tenants.get(tenant)
        if memory is None and create and tenant != ANONYMOUS_TENANT:
            if len(self._tenants) >= self.max_tenants:  # full: the newcomer is refused, nobody is evicted
                self.refused_admissions += 1
                return None
            memory = InvocationMemory(self.match_min, self.match_max, self.tokens_per_tenant, self.suffix)
            self._tenants[tenant] = memory
        return memory

    def admissible(self, tenant: str) -> bool:
        """Whether `tenant` has a memory or would get one now (no side effect): False for the anonymous tenant and
        for a new tenant while the bank is full."""
        with self._lock:
            return tenant != ANONYMOUS_TENANT and (tenant in self._tenants or len(self._tenants) < self.max_tenants)

    def admit(self, tenant: str) -> bool:
        """Whether `tenant` has (or now gets) a memory of its own: False for the anonymous tenant and for a new
        tenant while the bank is full. A refused tenant's requests share nothing, as anonymous ones."""
        with self._lock:
            return self._memory(tenant, create=True) is not None

    def add(
        self, tenant: str, answer: Sequence[int], prompt: Sequence[int] | None = None, *, tree_key: int | None = None
    ) -> bool:
        """Store an answer in `tenant`'s memory (False: the anonymous tenant, or a new tenant refused because the
        bank is full). `prompt` is recorded (as a digest) so a benchmark can refuse to measure on it. `tree_key`:
        the request `open_request` gave, whose answer is already in the tenant's suffix tree."""
        with self._lock:
            memory = self._memory(tenant, create=True)
            if memory is None:
                return False
            memory.add(answer, tree_key)
            if prompt is not None:
                self.source_prompts.add(prompt_digest(prompt))
            return True

    def use_suffix(self, suffix: SuffixParams | None) -> None:
        """Keep (or stop keeping) suffix trees with these parameters: a bank made elsewhere serves a drafter."""
        with self._lock:
            if suffix != self.suffix:
                self.suffix = suffix
                for memory in self._tenants.values():
                    memory.build_trees(suffix)

    # -- suffix trees of an established tenant (`suffix` set) -------------------------------------------------
    def open_request(self, tenant: str, prompt: Sequence[int]) -> int | None:
        """Open a request in `tenant`'s suffix trees (None: no trees, or the tenant is not established: nothing of
        the tenant's to draft from yet). Its answer joins the tenant's global tree as it grows (`extend_request`)."""
        with self._lock:
            memory = self._memory(tenant, create=False)
            return memory.trees.open(prompt) if memory is not None and memory.trees is not None else None

    def extend_request(self, tenant: str, key: int, tokens: Sequence[int]) -> None:
        with self._lock:
            self._trees(tenant).extend(key, tokens)

    def speculate(self, tenant: str, key: int, context: Sequence[int], max_tokens: int) -> SuffixDraft:
        """The suffix-decoding draft of an open request: from its prompt and answer or the tenant's answers."""
        with self._lock:
            return self._trees(tenant).speculate(key, context, max_tokens)

    def speculate_each(
        self, tenant: str, key: int, context: Sequence[int], max_tokens: int
    ) -> tuple[SuffixDraft, SuffixDraft] | None:
        """(own tree's draft, global tree's draft) of an open request (`SuffixTrees.speculate_each`), or None."""
        with self._lock:
            return self._trees(tenant).speculate_each(key, context, max_tokens)

    def discard_request(self, tenant: str, key: int) -> None:
        """Close an open request whose answer is not remembered (out of the global tree too)."""
        with self._lock:
            self._trees(tenant).close(key, keep=False)

    def _trees(self, tenant: str) -> SuffixTrees:
        memory = self._tenants[tenant]  # an opened request's tenant is established: tenants are never removed
        assert memory.trees is not None
        return memory.trees

    def overlap(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        """Indices of `prompts` whose answers are in this memory."""
        return overlapping(prompts, self.source_prompts)

    def continuations(self, tenant: str, context: Sequence[int], length: int, limit: int = 1) -> list[list[int]]:
        return [tokens for _, tokens in self.matches(tenant, context, length, limit)]

    def matches(self, tenant: str, context: Sequence[int], length: int, limit: int = 1) -> list[tuple[int, list[int]]]:
        """(matched suffix length, continuation) pairs of the tenant's memory, best first."""
        with self._lock:
            memory = self._memory(tenant, create=False)
            return memory.matches(context, length, limit) if memory is not None else []

    def tenants(self) -> list[str]:
        with self._lock:
            return list(self._tenants)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "tenants": len(self._tenants),
                "answers": sum(len(m) for m in self._tenants.values()),
                "tokens": sum(m.tokens for m in self._tenants.values()),
                "evicted_answers": sum(m.evicted for m in self._tenants.values()),
                "refused_admissions": self.refused_admissions,
            }

    def to_data(self) -> dict[str, Any]:
        with self._lock:
            return {
                "match_min": self.match_min,
                "match_max": self.match_max,
                "tenants": {name: m.answers() for name, m in self._tenants.items()},
                "source_prompts": sorted(self.source_prompts),
            }

    def save(self, path: str | os.PathLike[str]) -> None:
        write_data_file(path, KIND, VERSION, self.to_data())

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        tokens_per_tenant: int = 200_000,
        max_tenants: int = 1_000,
        suffix: SuffixParams | None = None,
    ) -> InvocationMemoryBank:
        """Read a memory file; refuse (DataFileError with the reason) anything but a whole, well-formed one. With
        `suffix`, every tenant's suffix tree is rebuilt from its stored answers."""
        _, payload = read_data_file(path, KIND, [VERSION])
        try:
            bank = cls(
                match_min=int(payload["match_min"]),
                match_max=int(payload["match_max"]),
                tokens_per_tenant=tokens_per_tenant,
                max_tenants=max_tenants,
                suffix=suffix,
            )
            for tenant, answers in payload["tenants"].items():
                if not isinstance(tenant, str) or not isinstance(answers, list):
                    raise TypeError("tenants must map names to lists of answers")
                bank.admit(tenant)  # established tenants stay established, answers or not (up to max_tenants)
                for answer in answers:
                    if not isinstance(answer, list) or not all(isinstance(t, int) and t >= 0 for t in answer):
                        raise TypeError("an answer is not a list of token ids")
                    bank.add(tenant, answer)
            sources = payload.get("source_prompts", [])
            if not isinstance(sources, list) or not all(isinstance(d, str) for d in sources):
                raise TypeError("source_prompts must be a list of digests")
            bank.source_prompts = set(sources)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise DataFileError(path, f"malformed invocation memory ({exc})") from None
        return bank
