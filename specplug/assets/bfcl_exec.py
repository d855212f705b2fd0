"""Execute BFCL multi-turn gold calls on BFCL's own in-memory backends, extracted from the pinned wheel.

Why not `pip install bfcl-eval`: the wheel pins numpy==1.26.4, an old vLLM and a dozen API clients, which would
break every engine environment. The eight backend classes (GorillaFileSystem, TwitterAPI, ...) only need the
standard library and mpmath (already installed with torch), so their source files are extracted into the BFCL
cache entry like the data, verified by SHA-256, and imported from there under private module names.

What follows BFCL (bfcl_eval/eval_checker/multi_turn_eval/multi_turn_utils.py, execute_multi_turn_func_call):
one instance per involved class and conversation, `_load_scenario(deepcopy(initial_config[cls]), long_context)`
except for stateless MathAPI, method names mapped to instances in `involved_classes` order, results turned into
text the same way (str kept, dict -> JSON, else str(); an exception -> "Error during execution: ..."). What we
change, for determinism only: gold call strings are parsed with `ast` (no `eval`), the decimal context of a call
is local, and TravelAPI's age check sees a fixed "today" (FROZEN_TODAY) instead of the wall clock. The backends
keep all state in memory; they neither read nor write files nor touch the network.
"""

from __future__ import annotations

import ast
import copy
import datetime as _dt
import decimal
import inspect
import json
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from specplug.assets.cache import AssetError

BACKEND_DIR = "bfcl_eval/eval_checker/multi_turn_eval/func_source_code/"
# Class -> module file stem (bfcl_eval/constants/executable_backend_config.py, CLASS_FILE_PATH_MAPPING).
BACKEND_MODULES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
STATELESS_CLASSES = ("MathAPI",)
_SHARED = "long_context"  # constants the other modules import by their absolute bfcl_eval name
BACKEND_MEMBERS = tuple(f"{BACKEND_DIR}{stem}.py" for stem in (_SHARED, *BACKEND_MODULES.values()))
FROZEN_TODAY = _dt.datetime(2026, 3, 23)  # the bfcl-eval release date; TravelAPI computes ages from "today"
_BFCL_PREFIX = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code."

_loaded: dict[Path, dict[str, type]] = {}
_lock = threading.Lock()


class _FrozenDatetime(_dt.datetime):
    @classmethod
    def today(cls) -> _FrozenDatetime:
        return cls.combine(FROZEN_TODAY.date(), FROZEN_TODAY.time())

    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> _FrozenDatetime:
        return cls.today()


def _exec_module(name: str, path: Path) -> ModuleType:
    """Run a source file as module `name`; compiled in memory, so no __pycache__ is written into the cache."""
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # classes find their module by name (pickle, deepcopy of bound state)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


def backend_classes(root: Path) -> dict[str, type]:
    """The backend classes of the extracted BFCL tree under `root`, imported once per tree (private names)."""
    root = root.resolve()
    with _lock:
        if root in _loaded:
            return _loaded[root]
        src = root / BACKEND_DIR
        missing = [m for m in BACKEND_MEMBERS if not (root / m).is_file()]
        if missing:
            raise AssetError(
                f"{root} lacks BFCL's backend source {missing[0]}; pull the dataset again: specplug assets pull bfcl"
            )
        prefix = f"_specplug_bfcl_backends_{len(_loaded)}."
        alias = _BFCL_PREFIX + _SHARED
        previous = sys.modules.get(alias)
        try:
            sys.modules[alias] = _exec_module(prefix + _SHARED, src / f"{_SHARED}.py")
            modules = {stem: _exec_module(prefix + stem, src / f"{stem}.py") for stem in BACKEND_MODULES.values()}
        except ImportError as exc:
            module = (exc.name or "mpmath").split(".")[0]
            raise AssetError(f"BFCL's backends need the module {module}; install it: pip install {module}") from exc
        finally:
            if previous is None:
                sys.modules.pop(alias, None)
            else:
                sys.modules[alias] = previous
        modules["travel_booking"].datetime = _FrozenDatetime
        classes = {cls: getattr(modules[stem], cls) for cls, stem in BACKEND_MODULES.items()}
        _loaded[root] = classes
        return classes


@dataclass(frozen=True)
class GoldCall:
    """One parsed gold call: the source text, its positional and keyword arguments, and the named form."""

    text: str
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def named(self, method: Any) -> dict[str, Any]:
        """{"name", "arguments"} with positional arguments named from the backend method's signature."""
        params = [
            p
            for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(self.args) > len(params):
            raise AssetError(f"BFCL gold call {self.text!r} has more positional arguments than {self.name} takes")
        arguments = {p.name: value for p, value in zip(params, self.args, strict=False)}
        arguments.update(self.kwargs)
        return {"name": self.name, "arguments": arguments}


def parse_gold_call(text: str) -> GoldCall:
    """`name(literal, key=literal, ...)` -> GoldCall; anything else (nested calls, expressions) is an AssetError."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ValueError("not a plain function call")
        if any(k.arg is None for k in node.keywords):
            raise ValueError("**kwargs are not supported")
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except (SyntaxError, ValueError) as exc:
        raise AssetError(f"cannot read BFCL gold call {text!r}: {exc}") from None
    return GoldCall(text=text, name=node.func.id, args=args, kwargs=kwargs)


def result_text(value: Any) -> str:
    """A call's return value as BFCL feeds it back to the model."""
    if type(value) is str:
        return value
    if type(value) is dict:
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


class Conversation:
    """The backends of one BFCL multi-turn entry, initialised from its `initial_config` and kept across turns."""

    def __init__(
        self,
        classes: Mapping[str, type],
        involved_classes: Sequence[str],
        initial_config: Mapping[str, Any],
        *,
        long_context: bool = False,
    ) -> None:
        self.methods: dict[str, Any] = {}
        for name in involved_classes:
            if name not in classes:
                raise AssetError(f"BFCL entry uses backend {name!r}, which is not one of {', '.join(classes)}")
            instance = classes[name]()
            if name not in STATELESS_CLASSES:
                instance._load_scenario(copy.deepcopy(dict(initial_config).get(name, {})), long_context=long_context)
            for method_name, method in inspect.getmembers(instance, predicate=inspect.ismethod):
                if not method_name.startswith("_"):
                    self.methods[method_name] = method  # a later class wins, as in BFCL

    def execute(self, call: GoldCall) -> tuple[dict[str, Any], str]:
        """Run one gold call; returns its named form and BFCL's result text (errors become text, as in BFCL)."""
        method = self.methods.get(call.name)
        if method is None:
            return {
                "name": call.name,
                "arguments": dict(call.kwargs),
            }, f"Error during execution: name '{call.name}' is not defined"
        named = call.named(method)
        try:
            with decimal.localcontext():
                value = method(*copy.deepcopy(call.args), **copy.deepcopy(call.kwargs))
        except Exception as exc:  # BFCL reports every backend error to the model as text
            return named, f"Error during execution: {exc}"
        return named, result_text(value)
