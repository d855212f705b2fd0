"""Serve a model with ToolSpec through TensorRT-LLM's OpenAI-compatible server.

    python -m specplug.plugins.trtllm_toolspec.serve MODEL --tools tools.json \\
        [--toolspec-config '{"num_speculative_tokens": 8, "memory_path": "m.json", "save_path": "m.json"}'] \\
        [--tenant NAME] [--tokenizer DIR] [--llm-args '{"max_batch_size": 64}'] [--tool-parser NAME] \\
        [--host HOST] [--port PORT]

Why a launcher: `trtllm-serve --extra_llm_api_options cfg.yaml` cannot carry a Drafter object (YAML holds data
only), so a user drafter needs a process that builds `LLM(model, speculative_config=...)` in Python and then
starts the server. UNVERIFIED: the server class is TensorRT-LLM's internal
`tensorrt_llm.serve.openai_server.OpenAIServer` (what `trtllm-serve` itself starts, as
`OpenAIServer(llm=..., model=..., ...)` then `asyncio.run(server(host, port))`); its constructor changes between
versions, so only the keyword arguments its signature names are passed. Never run here (no GPU); argument parsing
and the wiring are tested against stand-ins.

All input is checked before the model loads: a bad flag, tools file or setting exits with status 2 and says why.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from specplug.core.errors import SpecplugError
from specplug.plugins.trtllm_toolspec.config import make_speculative_config, settings_from_mapping
from specplug.plugins.trtllm_toolspec.engine import engine_import
from specplug.plugins.trtllm_toolspec.pool import check_tools

SERVER_MODULE = "tensorrt_llm.serve.openai_server"
RESERVED_LLM_ARGS = ("model", "tokenizer", "speculative_config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m specplug.plugins.trtllm_toolspec.serve",
        description="TensorRT-LLM OpenAI server with ToolSpec speculative decoding (PyTorch backend).",
    )
    parser.add_argument("model", help="model directory or hub name (as for trtllm-serve)")
    parser.add_argument("--tools", help='JSON file: the OpenAI `tools` list (or {"tools": [...]}) for every request')
    parser.add_argument(
        "--toolspec-config", default="{}", help="ToolSpec settings: a JSON object, or a path to a .json file"
    )
    parser.add_argument("--tenant", default="default", help="retrieval-memory tenant of all requests")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: the model)")
    parser.add_argument("--max-concurrency", type=int, help="speculate only up to this many requests")
    parser.add_argument("--llm-args", default="{}", help="extra LLM(...) keyword arguments, as a JSON object")
    parser.add_argument("--tool-parser", help="TensorRT-LLM tool parser name, if its server takes one")
    parser.add_argument("--served-model-name", help="model name the API reports (default: MODEL)")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8000)
    return parser


def _json_argument(parser: argparse.ArgumentParser, flag: str, text: str, *, file_allowed: bool) -> Any:
    source = text
    if file_allowed and not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            parser.error(f"{flag}: {text!r} is neither a JSON object nor a readable file")
        source = path.read_text()
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        parser.error(f"{flag}: not valid JSON ({exc})")
    if not isinstance(value, dict):
        parser.error(f"{flag}: expected a JSON object, got {type(value).__name__}")
    return value


def _load_tools(parser: argparse.ArgumentParser, path_text: str) -> list[dict[str, Any]]:
    path = Path(path_text)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        parser.error(f"--tools: cannot read {path_text} ({exc.strerror or exc})")
    except json.JSONDecodeError as exc:
        parser.error(f"--tools: {path_text} is not valid JSON ({exc})")
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    try:
        tools = check_tools(data)
    except SpecplugError as exc:
        parser.error(f"--tools: {path_text}: {exc}")
    if not tools:
        parser.error(f"--tools: {path_text} holds no tools (expected a non-empty list of OpenAI tool objects)")
    return tools


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate everything that can be checked without TensorRT-LLM (exit 2 with a message if bad)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port: {args.port} is not a TCP port (1-65535)")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        parser.error(f"--max-concurrency: {args.max_concurrency} must be a positive integer")
    if not args.tenant:
        parser.error("--tenant: must not be empty")
    args.tools = _load_tools(parser, args.tools) if args.tools is not None else None
    args.settings = _json_argument(parser, "--toolspec-config", args.toolspec_config, file_allowed=True)
    try:
        settings_from_mapping(args.settings)
    except SpecplugError as exc:
        parser.error(f"--toolspec-config: {exc}")
    args.llm_kwargs = _json_argument(parser, "--llm-args", args.llm_args, file_allowed=False)
    reserved = sorted(set(args.llm_kwargs) & set(RESERVED_LLM_ARGS))
    if reserved:
        parser.error(f"--llm-args: {', '.join(reserved)} is set by the launcher (use MODEL / --tokenizer)")
    return args


def server_kwargs(server_class: Any, offered: dict[str, Any]) -> dict[str, Any]:
    """The offered constructor arguments the installed OpenAIServer names (versions add and drop some)."""
    params = inspect.signature(server_class).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in offered.items() if v is not None or k in params}
    return {k: v for k, v in offered.items() if k in params}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tokenizer = args.tokenizer or args.model
    try:
        speculative_config = make_speculative_config(
            tokenizer, tools=args.tools, tenant=args.tenant, max_concurrency=args.max_concurrency, **args.settings
        )
    except SpecplugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    llm_class = engine_import("tensorrt_llm", "LLM")
    extra = {"tokenizer": args.tokenizer} if args.tokenizer else {}
    llm = llm_class(model=args.model, speculative_config=speculative_config, **extra, **args.llm_kwargs)
    server_class = engine_import(SERVER_MODULE, "OpenAIServer")
    offered = {"llm": llm, "model": args.served_model_name or args.model, "tool_parser": args.tool_parser}
    server = server_class(**server_kwargs(server_class, offered))
    try:
        asyncio.run(server(args.host, args.port))
    finally:
        shutdown = getattr(llm, "shutdown", None)
        if callable(shutdown):
            shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
