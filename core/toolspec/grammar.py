"""The tool-call state machine: a request's OpenAI `tools` compiled, by llguidance, into a token-level matcher.

We do not hand-write a JSON grammar engine. llguidance (a vLLM dependency) compiles a Lark grammar with embedded
JSON Schemas into a matcher over the model's own tokenizer: `compute_ff_tokens` gives exactly the tokens the
schema forces next (tool names once a prefix is unique, keys, quotes, braces, enum tails) and `validate_tokens`
says how much of a proposed continuation is schema-legal. Free text around calls is unconstrained: a call starts
at the format's opening tag (a lazy lexeme, so the tag is found wherever the tokenizer splits it).

The schema here is a *drafting* guide, not a constraint on the model: objects with declared properties are
closed and keys follow the declared order, because that is what models usually write. When the model writes
something else (a wrong tool name, an unknown key), the tracker goes off-schema for that call, drafts without
the schema, and re-arms after the call's closing tag. Verification stays greedy, so output never depends on it.

A request whose output the engine constrains with a JSON Schema (vLLM's structured outputs: `tool_choice`
"required" or a named function, `response_format`) carries that schema instead of its tools (`constraint_tools`):
the whole answer is then that JSON, and what the schema forces is certain, not a guess. Its grammar closes objects
and keeps the declared key order as the engine's own matcher does (xgrammar's strict mode), and assumes the
model's usual `json.dumps` layout; if the model spaces its JSON otherwise, the tracker replays the answer under the
same schema with any whitespace (`relaxed_grammar`), which forces less but matches whatever the engine allows.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from specplug.core.errors import ConfigError
from specplug.core.toolspec.formats import ToolCallFormat

_KEEP = {"type", "properties", "required", "items", "enum", "const", "anyOf", "oneOf", "additionalProperties",
         "minItems", "maxItems", "minimum", "maximum", "pattern", "format", "minLength", "maxLength"}  # fmt: skip


def normalize_schema(schema: Any) -> dict[str, Any]:
    """The drafting view of a tool's `parameters`, as a JSON Schema llguidance accepts.

    Dataset spellings (BFCL's "dict", "float", "tuple", "any"; ToolTalk's flags) are fixed by the same
    `normalize_schema` that renders the prompts' tools; then keys that do not shape the text (descriptions,
    defaults) are dropped and objects with declared properties are closed (see the module docstring).
    """
    from specplug.assets.datasets import normalize_schema as valid_json_schema

    return _drafting_view(valid_json_schema(schema)) if isinstance(schema, Mapping) else {}


def _drafting_view(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _KEEP:
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {str(k): _drafting_view(v) for k, v in value.items()}
        elif key == "items" and isinstance(value, Mapping):
            out[key] = _drafting_view(value)
        elif key in {"anyOf", "oneOf"} and isinstance(value, list):
            out[key] = [_drafting_view(v) for v in value]
        else:
            out[key] = copy.deepcopy(value)
    if isinstance(out.get("properties"), dict):
        out["required"] = [k for k in out.get("required", []) if k in out["properties"]]
        out.setdefault("additionalProperties", False)
        out.setdefault("type", "object")
    return out


def tool_functions(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """`{"name", "parameters"}` per tool from OpenAI tools (`{"type": "function", "function": {...}}`) or bare
    function descriptions; a tool without a usable name is a configuration error."""
    functions = []
    for index, tool in enumerate(tools or []):
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ConfigError("tools", f"tools[{index}]", "OpenAI tools, each with a function name", method="toolspec")
        functions.append({"name": name, "parameters": fn.get("parameters") or {}})
    return functions


def call_schema(tools: Sequence[Mapping[str, Any]] | None, fmt: ToolCallFormat) -> dict[str, Any]:
    """JSON Schema of one call in `fmt`: one alternative per tool (name fixed, arguments from its schema); with no
    tools, any name and any object (the structure is still forced)."""
    layout = {"whitespace_flexible": False, "item_separator": fmt.item_separator, "key_separator": fmt.key_separator}
    functions = tool_functions(tools)
    if not functions:
        options = [_call("string", {"type": "object"}, fmt)]
    else:
        options = [_call(f["name"], normalize_schema(f["parameters"]) or {"type": "object"}, fmt) for f in functions]
    schema = options[0] if len(options) == 1 else {"oneOf": options}
    if not fmt.tagged and fmt.name == "json":  # an answer may also be an array of calls
        schema = {"anyOf": [schema, {"type": "array", "items": schema, "minItems": 1}]}
    return {**schema, "x-guidance": layout}


def _call(name: str, arguments: dict[str, Any], fmt: ToolCallFormat) -> dict[str, Any]:
    name_schema = {"type": "string"} if name == "string" else {"const": name}
    return {
        "type": "object",
        "properties": {"name": name_schema, fmt.arguments_key: arguments},
        "required": ["name", fmt.arguments_key],
        "additionalProperties": False,
    }


CONSTRAINT_TYPE = "json_schema_constraint"  # the engine-neutral tool entry that carries an output constraint
_CONSTRAINT_HEAD = "%llguidance {}\nstart: %json "
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONES = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")


def constraint_tools(schema: Mapping[str, Any] | str | bool | None) -> list[dict[str, Any]] | None:
    """The `tools` that carry a request's JSON-Schema output constraint to the drafter, or None when llguidance
    cannot compile the schema (the request then drafts from its own tools: the engine still validates every draft).

    `True` (or an empty schema) stands for "any JSON object" (vLLM's `json_object`)."""
    if schema is True or schema is None:
        schema = {"type": "object"}
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            return None
    if not isinstance(schema, Mapping):
        return None
    grammar = constraint_grammar(schema)
    return [{"type": CONSTRAINT_TYPE, "json_schema": dict(schema)}] if _compiles(grammar) else None


def drafting_tools(tools: Any, sampling: Mapping[str, Any] | None) -> Any:
    """The tools a request drafts from: its JSON-schema output constraint (an engine's structured-output setting
    with `json`, e.g. vLLM's `StructuredOutputsParams` for `tool_choice` "required"/named, or `json_object`) in
    place of its `tools`; its own `tools` without one, or with a kind of constraint the drafter cannot follow
    (regex, grammar…)."""
    constraint = (sampling or {}).get("structured_outputs")
    if constraint is None:
        return tools
    schema = getattr(constraint, "json", None)
    if schema is None and not getattr(constraint, "json_object", None):
        return tools
    constrained = constraint_tools(True if schema is None else schema)
    return tools if constrained is None else constrained


@functools.lru_cache(maxsize=1024)
def _compiles(grammar: str) -> bool:
    """Whether llguidance accepts `grammar` (cached: agents send the same tool set again and again)."""
    import llguidance

    return not llguidance.LLMatcher.validate_grammar(grammar)


def json_constraint(tools: Sequence[Any] | None) -> dict[str, Any] | None:
    """The output-constraint schema `tools` carry (`constraint_tools`), or None for ordinary tools."""
    if tools and len(tools) == 1 and isinstance(tools[0], Mapping) and tools[0].get("type") == CONSTRAINT_TYPE:
        schema = tools[0].get("json_schema")
        return dict(schema) if isinstance(schema, Mapping) else {"type": "object"}
    return None


def constraint_grammar(schema: Mapping[str, Any], *, flexible: bool = False) -> str:
    """Lark grammar (llguidance dialect) of an answer that is exactly one JSON value of `schema`.

    `flexible=False` assumes `json.dumps` spacing (", " and ": "), which is what models write and what makes
    braces, quotes and separators forced; `flexible=True` allows any whitespace, as vLLM's default does."""
    layout = {"whitespace_flexible": flexible, "lenient": True}
    if not flexible:
        layout.update(item_separator=", ", key_separator=": ")
    return f"{_CONSTRAINT_HEAD}{json.dumps({**_strict_view(schema), 'x-guidance': layout})}\n"


def relaxed_grammar(grammar: str) -> str | None:
    """The any-whitespace form of a strict constraint grammar (None for any other grammar)."""
    if not grammar.startswith(_CONSTRAINT_HEAD):
        return None
    schema = json.loads(grammar[len(_CONSTRAINT_HEAD) :])
    if schema.get("x-guidance", {}).get("whitespace_flexible"):
        return None
    return constraint_grammar({k: v for k, v in schema.items() if k != "x-guidance"}, flexible=True)


def _strict_view(schema: Any) -> Any:
    """`schema` with every object that declares properties but says nothing of others closed, as xgrammar's strict
    mode (vLLM's default) reads it: its last key is then followed by a forced closing brace."""
    if not isinstance(schema, Mapping):
        return copy.deepcopy(schema)
    out = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {name: _strict_view(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_strict_view(sub) for sub in value]
        elif key in _SCHEMA_ONES:
            out[key] = [_strict_view(sub) for sub in value] if isinstance(value, list) else _strict_view(value)
        else:
            out[key] = copy.deepcopy(value)
    if "properties" in out and "additionalProperties" not in out and "unevaluatedProperties" not in out:
        out["additionalProperties"] = False
    return out


def _text(value: str) -> str:
    return json.dumps(value) if value else ""


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]] | None, fmt: ToolCallFormat, special_tokens: Sequence[str] = ()
) -> str:
    """Lark grammar (llguidance dialect) of a whole answer in `fmt`.

    Tagged formats: free text with any number of calls, each opened by the tag wherever it appears. A tag that is
    one special token of the tokenizer is matched as that token (Qwen's `<tool_call>`), otherwise as text.
    `tools` that carry an output constraint (`constraint_tools`) give that constraint's grammar, whatever `fmt`.
    """
    constraint = json_constraint(tools)
    if constraint is not None:
        return constraint_grammar(constraint)
    schema = json.dumps(call_schema(tools, fmt))  # key order matters: properties are matched in order
    if not fmt.tagged:
        return f"%llguidance {{}}\nstart: %json {schema}\n"

    def piece(text: str) -> str:
        stripped = text.strip()
        if stripped and stripped in special_tokens:
            before, after = text.split(stripped, 1)
            return " ".join(p for p in (_text(before), stripped, _text(after)) if p)
        return _text(text)

    trigger = fmt.trigger
    opening = f"call_trig {_text(fmt.begin[len(trigger) :])}".rstrip()
    if trigger in special_tokens:
        head = f"call: TEXT {trigger} {_text(fmt.begin[len(trigger) :])}".rstrip()
    else:
        head = f"call_trig[lazy]: TEXT {_text(trigger)}\ncall: {opening}"
    return (
        f"%llguidance {{}}\nstart: call* tail\ntail: TEXT\nTEXT: /(.|\\n)*/\n{head} %json {schema} {piece(fmt.end)}\n"
    )


@dataclass(frozen=True)
class Vocabulary:
    """A tokenizer as llguidance sees it, plus the special tokens a grammar may name. Build once per tokenizer."""

    ll_tokenizer: Any
    special_tokens: tuple[str, ...]
    eos_token_ids: tuple[int, ...]


_VOCABS: dict[int, tuple[Any, Vocabulary]] = {}  # id(tokenizer) -> (weak reference to it, its vocabulary)
_VOCAB_LOCK = threading.Lock()


def vocabulary(tokenizer: Any) -> Vocabulary:
    """llguidance's view of a Hugging Face fast tokenizer (about 0.3 s for 49k tokens, 3 s for 262k: cached)."""
    with _VOCAB_LOCK:
        cached = _VOCABS.get(id(tokenizer))
        if cached is not None and cached[0]() is tokenizer:  # an id can be reused once its object is gone
            return cached[1]
        import llguidance

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(
                "tokenizer", type(tokenizer).__name__, "a fast (Rust) Hugging Face tokenizer", method="toolspec"
            )
        eos = getattr(tokenizer, "eos_token_id", None)
        special = tuple(str(t) for t in getattr(tokenizer, "all_special_tokens", ()))
        added = tuple(str(t) for t in getattr(tokenizer, "get_added_vocab", dict)())
        vocab = Vocabulary(
            ll_tokenizer=llguidance.LLTokenizer(backend.to_str(), eos_token=eos),
            special_tokens=tuple(dict.fromkeys(special + added)),
            eos_token_ids=(eos,) if isinstance(eos, int) else (),
        )
        _VOCABS[id(tokenizer)] = (weakref.ref(tokenizer), vocab)
        return vocab


_MATCHERS: OrderedDict[tuple[int, str], tuple[Any, Any]] = OrderedDict()  # (tokenizer id, grammar) -> pristine
_MATCHERS_MAX = 256
_MATCHERS_LOCK = threading.Lock()


def compiled_matcher(ll_tokenizer: Any, grammar: str) -> Any:
    """A fresh llguidance matcher for `grammar`: compiled once per tool set and tokenizer (5–8 ms for a BFCL tool
    set), then copied for each request (~15 µs), so a request's start costs no compilation that TTFT would show.
    Raises ConfigError for a grammar llguidance refuses."""
    from llguidance import LLMatcher

    key = (id(ll_tokenizer), grammar)  # unique while cached: the entry keeps its tokenizer alive
    with _MATCHERS_LOCK:
        cached = _MATCHERS.get(key)
        if cached is not None:
            _MATCHERS.move_to_end(key)
            return cached[1].deep_copy()
    matcher = LLMatcher(ll_tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise ConfigError("tools", "…", f"a schema llguidance compiles ({matcher.get_error()})", method="toolspec")
    with _MATCHERS_LOCK:
        _MATCHERS[key] = (ll_tokenizer, matcher)  # the template is never advanced: requests get copies
        _MATCHERS.move_to_end(key)
        while len(_MATCHERS) > _MATCHERS_MAX:
            _MATCHERS.popitem(last=False)
    return matcher.deep_copy()


class CallTracker:
    """Follows one answer token by token and says what the tool schema allows next.

    `advance` feeds newly committed tokens. While the answer is on-schema, `forced()` and `legal_prefix()` come
    from the matcher; off-schema (the model wrote something the schema does not allow) both say "no constraint"
    until the call's closing text appears, after which the matcher starts again on the text that follows.
    """

    def __init__(
        self, vocab: Vocabulary, grammar: str, fmt: ToolCallFormat, decode: Any, *, any_layout: bool = False
    ) -> None:
        """`any_layout`: follow a constraint under any whitespace from the start (for a model known not to space
        its JSON as `json.dumps` does; the assumed layout would only force tokens it then rejects)."""
        self._vocab, self._grammar, self._fmt, self._decode = vocab, grammar, fmt, decode
        self._relaxed = relaxed_grammar(grammar)  # a constraint's any-whitespace form, tried once the layout breaks
        self._any_first = any_layout and self._relaxed is not None
        self.any_layout = self._any_first  # following the constraint under any whitespace
        if self._any_first:
            self._matcher, self._relaxed = self._compile(self._relaxed), None
        else:
            self._matcher = self._compile(grammar)
        self.constrained = grammar.startswith(_CONSTRAINT_HEAD)  # the whole answer is the engine-enforced JSON
        self._fed = 0  # committed output tokens seen
        self._off_from: int | None = None  # output index where the model left the schema
        self._output: list[int] = []
        self.off_schema_events = 0

    def _compile(self, grammar: str) -> Any:
        return compiled_matcher(self._vocab.ll_tokenizer, grammar)

    @property
    def on_schema(self) -> bool:
        return self._off_from is None

    def advance(self, output_tokens: Sequence[int]) -> None:
        """Feed the answer's tokens committed since the last call (the full answer so far is passed)."""
        if len(output_tokens) < self._fed or list(output_tokens[: self._fed]) != self._output:
            self._restart()  # not a continuation of what was seen (a recomputed or rewound request)
        new = list(output_tokens[self._fed :])
        self._fed = len(output_tokens)
        self._output.extend(new)
        if self._off_from is None:
            accepted = self._matcher.try_consume_tokens(new) if new else 0
            if accepted == len(new):
                return
            self._off_from = len(self._output) - len(new) + accepted
            self.off_schema_events += 1
            if self._relax():
                return
        self._rearm()

    def _restart(self) -> None:
        if self.any_layout and not self._any_first:  # back to the assumed layout
            self._matcher, self._relaxed = self._compile(self._grammar), relaxed_grammar(self._grammar)
            self.any_layout = False
        self._matcher.reset()
        self._fed, self._off_from, self._output = 0, None, []

    def _relax(self) -> bool:
        """A constrained answer that left the assumed layout: follow it under the any-whitespace grammar (once)."""
        if self._relaxed is None:
            return False
        self._matcher, self._relaxed = self._compile(self._relaxed), None
        self.any_layout = True
        if self._matcher.try_consume_tokens(self._output) != len(self._output):
            return False
        self._off_from = None
        return True

    def _rearm(self) -> None:
        """Off-schema: once the call's closing text is out, restart the matcher on the tokens after it."""
        if not self._fmt.tagged or self.constrained or self._off_from is None:
            return
        start = self._off_from
        tail = self._output[start:]
        closing = self._fmt.end.strip()
        if closing not in self._decode(tail):
            return
        cut = next(c for c in range(1, len(tail) + 1) if closing in self._decode(tail[:c]))
        self._matcher.reset()
        rest = tail[cut:]
        if self._matcher.try_consume_tokens(rest) == len(rest):
            self._off_from = None
        else:  # the text right after the tag broke it again: wait for the next closing tag
            self._off_from = start + cut
            self._rearm()

    def forced(self) -> list[int]:
        """Tokens the schema forces next (empty in free text, off-schema, or at a choice)."""
        if self._off_from is not None or self._matcher.is_stopped():
            return []
        if self._fmt.tagged and not self.constrained and self._matcher.is_accepting():
            # Between calls (`start: call* tail`, tail = any text): the answer may end or go on with any text, so
            # nothing is forced. ~1 µs, where compute_ff_tokens takes ~30 on every free-text step.
            return []
        return list(self._matcher.compute_ff_tokens())

    def legal_prefix(self, tokens: Sequence[int]) -> int:
        """How many of `tokens` the schema allows from here (all of them off-schema)."""
        if self._off_from is not None or not tokens:
            return len(tokens)
        return int(self._matcher.validate_tokens(list(tokens)))

    def push(self, tokens: Sequence[int], *, checked: bool = False) -> int:
        """Tentatively consume the legal prefix of draft tokens; returns its length (`pop` takes them back).

        Only validated tokens reach the matcher: an illegal one would put it in an error state for good. `checked`:
        the caller already validated all of `tokens` at this state (`legal_prefix`, `forced`, `allowed`).
        """
        if self._off_from is not None:
            return len(tokens)
        count = len(tokens) if checked else self.legal_prefix(tokens)
        if count:
            self._matcher.consume_tokens(list(tokens[:count]))
        return count

    def pop(self, count: int) -> None:
        if self._off_from is None and count:
            self._matcher.rollback(count)

    def legal_tokens(self) -> list[int]:
        """Every token the schema allows next (the whole vocabulary off-schema is reported as [])."""
        if self._off_from is not None:
            return []
        import numpy as np

        bits = np.unpackbits(np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        return np.flatnonzero(bits).tolist()

    def allowed(self, candidates: Sequence[int]) -> list[int]:
        """The candidates (single tokens) the schema allows next, in their order."""
        if self._off_from is not None:
            return list(candidates)
        return [t for t in candidates if self._matcher.validate_tokens([t]) == 1]
