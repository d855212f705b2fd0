"""ToolSpec's drafter (arXiv 2604.13519), engine-neutral: schema-forced tokens, retrieved continuations of earlier
answers, and token recycling, merged into one chain (or a token tree) per request within a draft budget.

Per step and request, while budget is left, the next draft tokens come from the first source that has any:
1. the tool schema: tokens the request's `tools` force next (`core.toolspec.grammar.CallTracker`);
2. retrieval, at the chain's start and after forced tokens: with `retrieval` "suffix" (`core.toolspec.retrieval`)
   the suffix-decoding draft of the request's own prompt and answer and the tenant's earlier answers, as vLLM's
   `suffix` method drafts it (frequency-scored, its length adaptive to the match); with "lookup" the
   continuation of the longest matching suffix in the tenant's earlier answers (`core.toolspec.memory`), then in
   the request's own prompt and answer (prompt lookup, never the trivial match of the suffix with itself), at most
   `suffix_max_spec_factor` × the match length. Only the schema-legal prefix is kept;
3. token recycling: the target's remembered top candidate after the last token, if the schema allows it.
Forced tokens can follow a retrieved or recycled one, so the sources interleave within one chain. Retrieval is not
asked again right after its own tokens: that would undo its adaptive length.

Engines call `start_request` / `draft` / `finish_request` with their own request ids (state is keyed by request,
never by batch row, because engines reorder rows); `finish_request` stores the answer in the tenant's memory.

Tenants stay apart: everything learned from outputs — the retrieval memory and the token-recycling table — is
kept per tenant, and a request learns into and drafts from its own tenant's only. The anonymous tenant
(`core.host.ANONYMOUS_TENANT`), a client-claimed name (`core.host.CLAIMED`, unless `trust_claimed_tenant`) and a
new tenant refused by a full memory (`memory_max_tenants`) share nothing: such a request gets a private
recycling table that dies with it, and its own prompt and answer (prompt lookup) as the only retrieval source.
The reference runner uses the `Proposer` protocol (`bind` then `propose`). Drafts never change output: every
engine verifies them greedily against the target.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from specplug.core.errors import ConfigError
from specplug.core.host import ANONYMOUS_TENANT, CLAIMED
from specplug.core.proposers.token_recycling import TokenRecycling
from specplug.core.toolspec.config import ToolSpecConfig
from specplug.core.toolspec.formats import resolve_format
from specplug.core.toolspec.grammar import CallTracker, tool_call_grammar, vocabulary
from specplug.core.toolspec.memory import InvocationMemoryBank
from specplug.core.toolspec.retrieval import SuffixParams, SuffixTrees, own_match
from specplug.core.types import PAD_TOKEN, DraftBatch, RequestContext

Retrieved = tuple[list[int], str, "list[float] | None"]  # (tokens, source, cumulative probabilities or None)


@dataclass
class _Request:
    tenant: str
    shared: bool  # learns into and drafts from its tenant's memories (False: nothing outlives the request)
    prompt: list[int]
    tracker: CallTracker | None
    recycling: TokenRecycling | None  # its own table (not shared), or its tenant's once the tenant has one
    output: list[int] = field(default_factory=list)
    own: SuffixTrees | None = None  # suffix retrieval: a tree of its own prompt and answer (no global tree)
    own_key: int = 0
    own_fed: int = 0  # answer tokens its private tree has (fed when drafted from: a tenant's request rarely is)
    fed: int = 0  # answer tokens the suffix trees have
    slot: tuple[InvocationMemoryBank, int] | None = None  # (bank, key): open in its tenant's suffix trees


class ToolSpecDrafter:
    name = "toolspec"
    accepts_arrays = True  # contexts may be numpy rows (an engine's token buffer): only the needed tail is copied

    def __init__(self, config: ToolSpecConfig, tokenizer: Any, *, bank: InvocationMemoryBank | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.format = resolve_format(config.tool_format, getattr(tokenizer, "chat_template", None))
        self.suffix = config.suffix_params  # None: lookup retrieval (or none)
        self.bank = bank if bank is not None else load_bank(config)
        self.bank.use_suffix(self.suffix)
        self._recycling: dict[str, TokenRecycling] = {}  # per admitted tenant (at most memory_max_tenants)
        self._any_layout_tenants: set[str] = set()  # tenants whose constrained answers left json.dumps spacing
        self.drafted: Counter[str] = Counter()  # draft tokens per source
        self.private_requests = 0  # requests that shared nothing (anonymous, claimed or refused tenants)
        self._requests: dict[str, _Request] = {}
        self._grammars: dict[str, str] = {}
        self._lock = threading.Lock()
        self._bound: list[str] = []

    # -- engine-facing API ---------------------------------------------------------------------------------
    def start_request(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tenant: str = "default",
    ) -> None:
        """Begin a request. Bad `tools` raise ConfigError here, before any draft is made."""
        tenant = str(tenant)
        shared = self._may_share(tenant)
        tracker = None
        if self.config.use_schema:
            vocab = vocabulary(self.tokenizer)
            grammar = self._grammar(tools, vocab.special_tokens)
            layout = self.config.constrained_layout
            any_layout = layout == "any" or (layout == "auto" and shared and tenant in self._any_layout_tenants)
            tracker = CallTracker(vocab, grammar, self.format, self._decode, any_layout=any_layout)
        with self._lock:
            recycling = None
            if self.config.use_recycling:
                recycling = self._recycling.get(tenant) if shared else self._new_recycling()
            if not shared:
                self.private_requests += 1
            prompt = [int(t) for t in prompt_token_ids]
            request = _Request(tenant, shared, prompt, tracker, recycling)
            if self.suffix is not None:
                _open_own(request, self.suffix)
            self._requests[request_id] = request

    def _may_share(self, tenant: str) -> bool:
        """Whether `tenant`'s requests may share memories: a name the deployment controls (claimed names only with
        the operator's opt-in) that is established or that the bank still has room for. Nothing is created here:
        a tenant is established by the first thing it learns (`_learning_table`, `finish_request`)."""
        if tenant == ANONYMOUS_TENANT or (tenant.startswith(CLAIMED) and not self.config.trust_claimed_tenant):
            return False
        return self.bank.admissible(tenant)

    def _learning_table(self, request: _Request) -> TokenRecycling | None:
        """The recycling table `request` learns into: its own, or its tenant's (made on the tenant's first lesson,
        which establishes the tenant; a tenant the bank refuses by then makes the request private from here on)."""
        if request.recycling is not None or not self.config.use_recycling:
            return request.recycling
        with self._lock:
            table = self._recycling.get(request.tenant)
            if table is None:
                if self.bank.admit(request.tenant):
                    table = self._recycling[request.tenant] = self._new_recycling()
                else:
                    request.shared = False
                    self.private_requests += 1
                    table = self._new_recycling()
            request.recycling = table
            return table

    def _drafting_table(self, request: _Request) -> TokenRecycling | None:
        """The recycling table `request` drafts from (None: nothing learned yet)."""
        if request.recycling is None and request.shared and self.config.use_recycling:
            request.recycling = self._recycling.get(request.tenant)  # another request of the tenant may have made it
        return request.recycling

    def _new_recycling(self) -> TokenRecycling:
        return TokenRecycling(len(self.tokenizer), self.config.recycling_top_k, self.config.recycling_rows_per_tenant)

    def recycling_of(self, request_id: str) -> TokenRecycling | None:
        """The token-recycling table `request_id` learns into and drafts from (its tenant's, or its own)."""
        request = self._requests.get(request_id)
        return self._learning_table(request) if request is not None else None

    def has_request(self, request_id: str) -> bool:
        return request_id in self._requests

    def active_requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def draft(self, request_id: str, token_ids: Sequence[int], budget: int | None = None) -> list[int]:
        """A chain of at most `budget` tokens to follow `token_ids` (the request's prompt and answer so far)."""
        request = self._update(request_id, token_ids)
        budget = self.config.num_speculative_tokens if budget is None else budget
        return self._chain(request, token_ids, budget) if budget > 0 else []

    def draft_tree(
        self, request_id: str, token_ids: Sequence[int], budget: int | None = None
    ) -> tuple[list[int], list[int]]:
        """A token tree (tokens, parent index per node, -1 under the root) of at most `budget` nodes.

        The chain `draft` would return is its first path; at the first point the schema does not force, up to
        `tree_width - 1` alternatives branch off (other retrieved continuations, then recycled candidates).
        """
        request = self._update(request_id, token_ids)
        budget = self.config.num_speculative_tokens if budget is None else budget
        if budget <= 0:
            return [], []
        context = list(token_ids)
        primary = self._chain(request, context, budget)
        forced = self._forced_prefix(request, primary)
        branch_at = context + primary[:forced]
        first = primary[forced] if forced < len(primary) else None
        options = [o for o in self._alternatives(request, branch_at, budget - forced) if o[0] != first]
        options = options[: self.config.tree_width - 1]
        if not options:
            return primary, list(range(-1, len(primary) - 1))
        share = max(1, (budget - forced) // (len(options) + 1))  # alternatives get a fair share of the budget
        alternatives = [primary[:forced] + o[:share] for o in options]
        room = budget - sum(len(a) - forced for a in alternatives)
        return _trie([primary[: max(room, forced + 1)], *alternatives], budget)

    def finish_request(
        self,
        request_id: str,
        *,
        remember: bool = True,
        token_ids: Sequence[int] | None = None,
        output_ids: Sequence[int] | None = None,
    ) -> None:
        """End a request; its answer joins its tenant's retrieval memory (unless `remember` is False).

        `token_ids`: the request's final prompt + answer, or `output_ids`: its final answer alone, when the engine
        committed tokens after the last draft.
        """
        if output_ids is not None and token_ids is None and request_id in self._requests:
            token_ids = [*self._requests[request_id].prompt, *output_ids]
        if token_ids is not None and remember and request_id in self._requests:
            self._update(request_id, token_ids)
        with self._lock:
            request = self._requests.pop(request_id, None)
        if request is None:
            return
        tracker = request.tracker
        departed = tracker is not None and tracker.constrained and tracker.any_layout
        if departed and request.shared and self.bank.admissible(request.tenant):  # admitted only: bounded
            self._any_layout_tenants.add(request.tenant)
        keep = remember and request.shared and self.config.use_retrieval and bool(request.output)
        slot = request.slot if request.slot is not None and request.slot[0] is self.bank else None
        if keep:
            self.bank.add(request.tenant, request.output, prompt=request.prompt, tree_key=slot[1] if slot else None)
        elif slot is not None:
            self.bank.discard_request(request.tenant, slot[1])

    def observe_logits(self, request_id: str, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """Target scores at `request_id`'s verified positions (`tokens` [N] inputs, `logits` [N, V]): its token
        recycling table (its tenant's, or its own) learns them."""
        request = self._requests.get(request_id)
        table = self._learning_table(request) if request is not None and len(tokens) else None
        if table is not None:
            table.observe_logits(tokens, logits)

    def save(self, path: str) -> None:
        self.bank.save(path)

    def reset_memory(self) -> None:
        """Back to the memory the drafter started with (its `memory_path`, or empty), recycling tables and learned
        JSON layouts cleared: what a benchmark does after warm-up so a cold arm is really cold."""
        self.bank = load_bank(self.config)
        with self._lock:
            self._recycling.clear()
            self._any_layout_tenants.clear()
        self.drafted.clear()

    # -- Proposer protocol (reference runner) --------------------------------------------------------------
    def bind(self, requests: Sequence[RequestContext]) -> None:
        """Start one request per batch row (the reference runner's rows never move)."""
        for request in requests:
            self.start_request(request.request_id, request.prompt_token_ids, tools=request.tools, tenant=request.tenant)
        self._bound = [r.request_id for r in requests]

    def start_batch(self, batch: int) -> None:
        if len(self._bound) != batch:
            raise ConfigError(
                "requests", len(self._bound), f"{batch} bound with ToolSpecDrafter.bind", method="toolspec"
            )

    def propose(
        self,
        contexts: Sequence[Sequence[int]],
        *,
        active: Sequence[bool] | None = None,
        request_ids: Sequence[str] | None = None,
        budgets: Sequence[int] | None = None,
        **_: Any,
    ) -> DraftBatch:
        """One chain per row. Engine hosts name each row's request (`request_ids`, started through the request
        hooks) and its room (`budgets`); the reference runner's rows are the requests bound with `bind`."""
        k = self.config.num_speculative_tokens
        ids = self._bound if request_ids is None else request_ids
        # Filled in numpy, one tensor made at the end: per-row torch calls cost more than drafting a short chain.
        tokens = np.full((len(contexts), k), PAD_TOKEN, dtype=np.int64)
        counts = np.zeros(len(contexts), dtype=np.int64)
        for row, context in enumerate(contexts):
            if active is not None and not active[row]:
                continue
            budget = k if budgets is None else min(k, int(budgets[row]))
            if budget <= 0:
                continue
            chain = self.draft(ids[row], context, budget)
            tokens[row, : len(chain)] = chain
            counts[row] = len(chain)
        return DraftBatch(tokens=torch.from_numpy(tokens), num_tokens=torch.from_numpy(counts))

    def observe_verify(
        self,
        inputs: torch.Tensor,
        target_logits: torch.Tensor,
        valid: torch.Tensor,
        request_ids: Sequence[str] | None = None,
    ) -> None:
        """Reference-runner feedback: `inputs` [B, K+1] token before each scored position, `valid` [B, K+1].

        Row b is the b-th bound request (`bind`), or, with `request_ids` (a host's step: its active requests in row
        order), the b-th row that has a scored position. Rows that cannot be named learn nothing."""
        if request_ids is None:
            rows, ids = list(range(len(self._bound))), self._bound
        else:
            rows, ids = [b for b in range(valid.shape[0]) if bool(valid[b].any())], list(request_ids)
        if len(rows) != len(ids) or (rows and rows[-1] >= valid.shape[0]):
            return
        for row, request_id in zip(rows, ids, strict=True):
            keep = valid[row]
            self.observe_logits(request_id, inputs[row][keep], target_logits[row][keep])

    def finish_batch(self) -> None:
        for request_id in self._bound:
            self.finish_request(request_id)
        self._bound = []

    # -- drafting --------------------------------------------------------------------------------------------
    def _update(self, request_id: str, token_ids: Sequence[int]) -> _Request:
        request = self._requests.get(request_id)
        if request is None:
            raise KeyError(f"toolspec: request {request_id!r} was not started (start_request first)")
        output = _ints(token_ids[len(request.prompt) :])
        fresh = _ints(token_ids[max(len(request.prompt) + len(request.output) - 1, 0) :])  # the prompt's last first
        table = self._learning_table(request) if len(fresh) >= 2 else None  # committed transitions since last time
        if table is not None:
            table.observe_committed(fresh)
        request.output = output
        if request.own is not None:
            self._feed(request)
        if request.tracker is not None:
            request.tracker.advance(output)
        return request

    def _feed(self, request: _Request) -> None:
        """Give the request's tenant trees the answer tokens committed since last time (engines only append; an
        answer that shrank rebuilds the request's trees). Its private tree catches up when drafted from
        (`_own_tree`)."""
        assert request.own is not None
        if len(request.output) < request.fed:
            _open_own(request, request.own.params)
            if request.slot is not None and request.slot[0] is self.bank:
                self.bank.discard_request(request.tenant, request.slot[1])
            request.slot, request.fed = None, 0
        fresh = request.output[request.fed :]
        if fresh:
            if request.slot is not None and request.slot[0] is self.bank:
                self.bank.extend_request(request.tenant, request.slot[1], fresh)
            request.fed = len(request.output)

    def _own_tree(self, request: _Request) -> SuffixTrees:
        """The request's private tree of its prompt and answer so far."""
        assert request.own is not None
        fresh = request.output[request.own_fed :]
        if fresh:
            request.own.extend(request.own_key, fresh)
            request.own_fed = len(request.output)
        return request.own

    def _tenant_key(self, request: _Request) -> int | None:
        """The request's key in its tenant's suffix trees; None for a request that shares nothing, or while neither
        the tenant nor the request has learned anything. Its answer growing in the tenant's global tree (as vLLM's
        suffix method shares running answers) is a lesson: it establishes the tenant, or, refused by a full bank,
        makes the request private from here on."""
        if not request.shared:
            return None
        if request.slot is not None and request.slot[0] is self.bank:
            return request.slot[1]
        if request.fed and not self.bank.admit(request.tenant):
            with self._lock:
                request.shared = False
                self.private_requests += 1
            return None
        key = self.bank.open_request(request.tenant, request.prompt)  # a reset memory is a new bank: reopen
        request.slot = None if key is None else (self.bank, key)
        if key is not None and request.fed:
            self.bank.extend_request(request.tenant, key, request.output[: request.fed])
        return key

    def _chain(self, request: _Request, context: Sequence[int], budget: int) -> list[int]:
        tracker, draft, pushed = request.tracker, [], 0
        retrieve = True  # at the chain's start and after forced tokens
        recycle = self.config.recycling_max_tokens
        # Under an engine-enforced constraint forced tokens are certain, so a chain may run forced span, retrieved
        # tail, forced span, ... deep into the JSON; every retrieved tail is a guess, and a step verifies (and, under
        # vLLM's structured outputs, masks) every drafted position. The chain ends where the estimated probability
        # that all of its guesses are right falls under `constrained_min_confidence`.
        floor = self.config.constrained_min_confidence if tracker is not None and tracker.constrained else 0.0
        confidence = 1.0
        # Suffix trees match the last `depth` tokens: a long context is not copied at every draft step.
        context = _ints(context[-request.own.params.depth :] if request.own is not None else context)
        try:
            while len(draft) < budget:
                room = budget - len(draft)
                step, source, probs = self._next(request, context + draft, room, retrieve, recycle > 0)
                if not step:
                    break
                capped = False
                if floor and probs:
                    keep = next((i for i, p in enumerate(probs[: len(step)]) if confidence * p < floor), len(step))
                    capped = keep < len(step)
                    if keep == 0:
                        break
                    step, confidence = step[:keep], confidence * probs[keep - 1]
                if tracker is not None:
                    pushed += tracker.push(step, checked=True)  # `_next` returns schema-legal tokens only
                draft.extend(step)
                self.drafted[source] += len(step)
                if capped:
                    break
                retrieve = source == "schema"
                recycle -= len(step) if source == "recycling" else 0
        finally:
            if tracker is not None:
                tracker.pop(pushed)
        return draft

    def _next(
        self, request: _Request, sequence: list[int], room: int, retrieve: bool, recycle: bool
    ) -> tuple[list[int], str, list[float] | None]:
        """The next draft tokens (all of them schema-legal), their source (an empty list when no source has any) and,
        for suffix retrieval, the estimated probability that they are right up to each token."""
        tracker = request.tracker
        if tracker is not None:
            forced = tracker.forced()[:room]
            if forced:
                return forced, "schema", None
        if self.config.use_retrieval and retrieve:
            for tokens, source, probs in self._retrieved(request, sequence, room):
                legal = len(tokens) if tracker is None else tracker.legal_prefix(tokens)
                if legal:
                    return tokens[:legal], source, probs
        recycling = self._drafting_table(request) if recycle else None
        if recycling is not None and sequence:
            options = recycling.candidates(sequence[-1])
            if tracker is not None:
                options = tracker.allowed(options)
            if options:
                return options[:1], "recycling", None
        return [], "", None

    def _retrieved(self, request: _Request, sequence: list[int], room: int) -> list[Retrieved]:
        """Retrieved continuations of `sequence`, best first, each with its source ("context": the request's own
        prompt and answer, "memory": the tenant's earlier answers) and its probabilities (suffix trees only)."""
        if request.own is not None:
            return self._suffix_drafts(request, sequence, room)
        factor = self.config.suffix_max_spec_factor  # the match-length cap of suffix decoding, on the n-gram index
        found = self.bank.matches(request.tenant, sequence, room) if request.shared else []
        at_least = found[0][0] if found else self.config.match_min
        matched, own = own_match(sequence, at_least, self.config.match_max, room)
        memory = found[0][1][: _cap(found[0][0], factor)] if found else []
        return [(own[: _cap(matched, factor)], "context", None), (memory, "memory", None)]  # own wins a tie

    def _suffix_drafts(self, request: _Request, sequence: list[int], room: int) -> list[Retrieved]:
        """vLLM's suffix draft over the request's own tree and its tenant's global tree (the own tree on a tie, as
        SuffixDecodingCache decides), then the own tree's draft alone. A request open in its tenant's trees has its
        own tree there too: both drafts come from that one cache, no lookup in its private one."""
        assert request.own is not None
        key = self._tenant_key(request)
        each = None if key is None else self.bank.speculate_each(request.tenant, key, sequence, room)
        if each is not None:
            own, both = each
        else:
            own = self._own_tree(request).speculate(request.own_key, sequence, room)
            both = None if key is None else self.bank.speculate(request.tenant, key, sequence, room)
        if both is None or both.score <= own.score:  # the tenant's trees chose the request's own tree
            return [(own.tokens, "context", own.probs)]
        return [(both.tokens, "memory", both.probs), (own.tokens, "context", own.probs)]

    def _forced_prefix(self, request: _Request, chain: list[int]) -> int:
        """How many leading tokens of `chain` the schema forces (where a tree may not branch)."""
        tracker = request.tracker
        if tracker is None:
            return 0
        count = 0
        pushed = 0
        try:
            while count < len(chain):
                forced = tracker.forced()
                run = 0
                while run < len(forced) and count + run < len(chain) and chain[count + run] == forced[run]:
                    run += 1
                if run == 0:
                    break
                pushed += tracker.push(chain[count : count + run])
                count += run
        finally:
            tracker.pop(pushed)
        return count

    def _alternatives(self, request: _Request, sequence: list[int], room: int) -> list[list[int]]:
        if room <= 0:
            return []
        options: list[list[int]] = []
        if self.config.use_retrieval and request.shared:
            options += self.bank.continuations(request.tenant, sequence, room, limit=self.config.tree_width)
        recycling = self._drafting_table(request)
        if recycling is not None and sequence:
            options += [[t] for t in recycling.candidates(sequence[-1])]
        tracker = request.tracker
        kept = []
        for option in options:
            legal = tracker.legal_prefix(option) if tracker is not None else len(option)
            if legal and option[:legal] not in kept:
                kept.append(option[:legal])
        return kept

    def _grammar(self, tools: Sequence[Mapping[str, Any]] | None, special: Sequence[str]) -> str:
        key = json.dumps(tools or [], sort_keys=True, default=str)
        with self._lock:
            grammar = self._grammars.get(key)
        if grammar is None:
            grammar = tool_call_grammar(tools, self.format, special)
            with self._lock:
                if len(self._grammars) >= 1024:
                    self._grammars.pop(next(iter(self._grammars)))
                self._grammars[key] = grammar
        return grammar

    def _decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=False)


def load_bank(config: ToolSpecConfig) -> InvocationMemoryBank:
    """The memory a drafter starts with: `memory_path` if given (refused with the reason if bad), else empty; with
    suffix retrieval, every tenant's suffix tree is built from its answers."""
    if config.memory_path:
        return InvocationMemoryBank.load(
            config.memory_path,
            tokens_per_tenant=config.memory_tokens_per_tenant,
            max_tenants=config.memory_max_tenants,
            suffix=config.suffix_params,
        )
    return InvocationMemoryBank(
        match_min=config.match_min,
        match_max=config.match_max,
        tokens_per_tenant=config.memory_tokens_per_tenant,
        max_tenants=config.memory_max_tenants,
        suffix=config.suffix_params,
    )


def _ints(tokens: Sequence[int]) -> list[int]:
    """Python ints of a token list or numpy row (copied: an engine's buffer changes under us next step)."""
    return tokens.tolist() if isinstance(tokens, np.ndarray) else list(tokens)


def _cap(matched: int, factor: float) -> int:
    """Suffix decoding's adaptive draft length: at most `factor` × the match length (at least one token)."""
    return max(1, int(matched * factor + 1e-6))


def _open_own(request: _Request, params: SuffixParams) -> None:
    """A fresh suffix tree of the request's prompt alone (a private cache: nothing of it outlives the request)."""
    request.own = SuffixTrees(params, shared=False)
    request.own_key, request.own_fed = request.own.open(request.prompt), 0


def _trie(chains: Sequence[Sequence[int]], budget: int) -> tuple[list[int], list[int]]:
    """Merge chains into a token tree (shared prefixes once), nodes in chain order, at most `budget` nodes."""
    tokens: list[int] = []
    parents: list[int] = []
    children: dict[tuple[int, int], int] = {}
    for chain in chains:
        parent = -1
        for token in chain:
            node = children.get((parent, token))
            if node is None:
                if len(tokens) == budget:
                    break
                node = len(tokens)
                tokens.append(int(token))
                parents.append(parent)
                children[(parent, token)] = node
            parent = node
    return tokens, parents
