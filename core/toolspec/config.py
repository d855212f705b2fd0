"""ToolSpec settings, validated at startup so that a bad value never reaches a serving loop.

Defaults follow the paper where it has one (suffix match of at most 7 tokens, token-recycling top-8) and are
sized for chains (vLLM and TensorRT-LLM verify one linear draft per request): `num_speculative_tokens` is the
draft budget per step. `use_schema` / `use_retrieval` / `use_recycling` switch each draft source off for ablations.

`retrieval` picks how earlier answers and the prompt are searched (`core.toolspec.retrieval`): "suffix" is
ArcticInference's suffix trees, as vLLM's `suffix` method (an adaptive draft length: at most `suffix_max_spec_factor`
× the match length, cut below `suffix_min_token_prob`; vLLM's defaults), "lookup" the pure-Python n-gram index and
prompt lookup, "auto" the suffix trees when installed. The "suffix" `num_speculative_tokens` cap follows vLLM's
suffix arm too (24): the adaptive length decides how much of it a step uses. `recycling_max_tokens` = 0 by default:
replaying SmolLM2's greedy ToolTalk answers, recycled tokens appended after a retrieved run added under one
accepted token per ten verified (each one costs CPU time), and where retrieval has nothing the table has
nothing either when it learns committed tokens only (vLLM), since the suffix trees hold the same text. The table
still learns, and still branches drafted trees (`draft_tree`).

Tenants (`core.host`: a deployment-controlled name, the anonymous tenant, or a name a client only claims): every
structure that learns from outputs (the retrieval memory, token recycling) is per tenant and bounded per tenant; at
most `memory_max_tenants` tenants, a new one refused (its requests share nothing) when that many are established.
`constrained_min_confidence`: when the engine enforces the answer's JSON schema (vLLM's structured outputs), the
forced tokens are certain and a chain may alternate forced spans and retrieved tails deep into the call; it ends
where the estimated probability (suffix trees' path probabilities, multiplied across tails) that every retrieved
token in it is right falls below this value, since every drafted position is verified and grammar-masked (0: no cap).
0.4 from a replay of the target's answers to held-out prompts (`scripts/toolspec_replay.py`).
`constrained_layout`: how the drafter expects such JSON to be spaced. "dumps" forces `json.dumps` spacing (`[{"name":
"` in one span) until the answer departs from it, then follows any whitespace; "any" follows any whitespace from
the start (forces less, wastes nothing on a model that spaces otherwise: SmolLM2 writes `[\n{\n"name": …`);
"auto" starts a tenant's answers as "dumps" and switches that tenant to "any" once one of its answers departed.

`trust_claimed_tenant` is the operator's opt-in to let client-claimed names (OpenAI `user`, `vllm_xargs`) share a
memory: untrusted, since any client can claim any name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from specplug.core.config import check_integer, settings, with_draft_length
from specplug.core.errors import ConfigError
from specplug.core.persist import DataFileError, check_interval, check_save_path, check_token_ids
from specplug.core.toolspec.retrieval import SuffixParams, resolve_retrieval

METHOD = "toolspec"
LAYOUTS = ("auto", "dumps", "any")  # constrained_layout values
FORMATS = ("auto", "hermes", "hermes-nl", "json", "llama3")


@dataclass(frozen=True)
class ToolSpecConfig:
    num_speculative_tokens: int = 24  # as vLLM's suffix arm: the adaptive length decides how much a step uses
    tool_format: str = "auto"  # how calls are written: see core.toolspec.formats
    match_min: int = 3  # shortest suffix that may retrieve a continuation
    match_max: int = 7  # longest suffix tried first (the paper's L = 7)
    recycling_top_k: int = 8  # token-recycling adjacency width (the paper's 8)
    recycling_max_tokens: int = 0  # recycled tokens per chain (0: learn, draft only in trees); each is verified
    tree_width: int = 3  # alternatives per branch point when drafting a tree
    memory_tokens_per_tenant: int = 200_000  # retrieval memory bound per tenant (oldest outputs go first)
    memory_max_tenants: int = 1_000  # when this many tenants are established, a new one is refused (nobody evicted)
    recycling_rows_per_tenant: int = 4096  # token-recycling rows per tenant (its least recently written go first)
    trust_claimed_tenant: bool = False  # opt-in: client-claimed tenant names (OpenAI `user`) share memories
    memory_path: str | None = None  # start from this memory file (checked at startup)
    save_path: str | None = None  # write the memory here at shutdown (and every save_interval_s while serving)
    save_interval_s: float = 60.0  # background saves while serving (0: only at shutdown)
    use_schema: bool = True
    use_retrieval: bool = True
    use_recycling: bool = True
    retrieval: str = "auto"  # "suffix" (needs arctic_inference), "lookup" (pure Python), "auto" (suffix if installed)
    suffix_max_tree_depth: int = 24  # vLLM's suffix_decoding_max_tree_depth
    suffix_max_spec_factor: float = 1.0  # draft at most this × the match length (vLLM's default)
    suffix_min_token_prob: float = 0.1  # stop where a token's estimated probability falls below (vLLM's default)
    constrained_min_confidence: float = 0.4  # engine-constrained answers: a chain ends where all its guesses' odds do
    constrained_layout: str = "auto"  # "dumps", "any" whitespace, or "auto": "any" once a tenant's answer left "dumps"

    def __post_init__(self) -> None:
        check_integer("num_speculative_tokens", self.num_speculative_tokens, 1, 256, method=METHOD)
        if self.tool_format not in FORMATS:
            raise ConfigError("tool_format", self.tool_format, f"one of {', '.join(FORMATS)}", method=METHOD)
        check_integer("match_min", self.match_min, 1, 64, method=METHOD)
        check_integer("match_max", self.match_max, self.match_min, 64, method=METHOD)
        check_integer("recycling_top_k", self.recycling_top_k, 1, 64, method=METHOD)
        check_integer("recycling_max_tokens", self.recycling_max_tokens, 0, 256, method=METHOD)
        check_integer("tree_width", self.tree_width, 1, 16, method=METHOD)
        check_integer("memory_tokens_per_tenant", self.memory_tokens_per_tenant, 0, 1 << 31, method=METHOD)
        check_integer("memory_max_tenants", self.memory_max_tenants, 1, 1 << 20, method=METHOD)
        check_integer("recycling_rows_per_tenant", self.recycling_rows_per_tenant, 1, 1 << 24, method=METHOD)
        check_interval("save_interval_s", self.save_interval_s, method=METHOD)
        for name in ("memory_path", "save_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(name, value, "a file path, or null", method=METHOD)
        for name in ("use_schema", "use_retrieval", "use_recycling", "trust_claimed_tenant"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "true or false", method=METHOD)
        check_integer("suffix_max_tree_depth", self.suffix_max_tree_depth, 1, 1024, method=METHOD)
        _check_number("suffix_max_spec_factor", self.suffix_max_spec_factor, 0.0, 1024.0, low_open=True)
        _check_number("suffix_min_token_prob", self.suffix_min_token_prob, 0.0, 1.0)
        _check_number("constrained_min_confidence", self.constrained_min_confidence, 0.0, 1.0)
        if self.constrained_layout not in LAYOUTS:
            allowed = f"one of {', '.join(LAYOUTS)}"
            raise ConfigError("constrained_layout", self.constrained_layout, allowed, method=METHOD)
        resolve_retrieval(self.retrieval)  # an unknown mode, or "suffix" without the package, fails here

    @property
    def retrieval_kind(self) -> str:
        """The retrieval drafters run: "suffix" or "lookup" ("auto" resolved against what is installed)."""
        return resolve_retrieval(self.retrieval)

    @property
    def suffix_params(self) -> SuffixParams | None:
        """The suffix-tree parameters when retrieval runs on suffix trees, else None."""
        if not self.use_retrieval or self.retrieval_kind != "suffix":
            return None
        return SuffixParams(self.suffix_max_tree_depth, self.suffix_max_spec_factor, self.suffix_min_token_prob)

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any]) -> ToolSpecConfig:
        """Build from user settings (engine flags, JSON), refusing unknown keys so a typo is not ignored."""
        return cls(**settings(METHOD, given, asdict(cls())))


def _check_number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (low < value if low_open else low <= value) or not value <= high:
        bracket = "(" if low_open else "["
        raise ConfigError(name, value, f"a number in {bracket}{low}, {high}]", method=METHOD)


def check_startup(
    given: Mapping[str, Any], *, num_speculative_tokens: int | None = None, vocab_size: int | None = None
) -> ToolSpecConfig:
    """Every check of ToolSpec's settings that needs no engine, as a host's front end runs them before the engine
    starts (and `specplug doctor --config`): the values, `save_path` writable, `memory_path` a whole, checksummed
    invocation memory whose token ids lie in the target's vocabulary. Raises `ConfigError` naming the setting."""
    from specplug.core.toolspec.memory import InvocationMemoryBank

    given = {key: value for key, value in given.items() if key != "tokenizer"}
    merged = with_draft_length(given, "num_speculative_tokens", num_speculative_tokens, method=METHOD)
    config = ToolSpecConfig.from_mapping(merged)
    check_save_path(config.save_path, method=METHOD)
    if config.memory_path is not None:
        try:
            bank = InvocationMemoryBank.load(
                config.memory_path,
                tokens_per_tenant=config.memory_tokens_per_tenant,
                max_tenants=config.memory_max_tenants,
            )
            check_token_ids(config.memory_path, bank.to_data().get("tenants"), vocab_size)
        except DataFileError as exc:
            allowed = f"a valid ToolSpec memory file ({exc.reason})"
            raise ConfigError("memory_path", config.memory_path, allowed, method=METHOD) from None
    return config
