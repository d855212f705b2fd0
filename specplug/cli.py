"""The `specplug` command: `specplug <group> <verb>`. Verbs import their heavy dependencies only when they run.

    doctor   [--config SETTINGS]              check the installation, or a method's settings (no engine)
    assets   pull | list | path               offline models and prompt sets
    bench    run | smc-report | smc-ab | overhead
    smc      settings
    csd      settings | calibrate
    toolspec settings | remember
    draft    distill | list

Every verb is a pair of functions, `add_arguments(parser)` and `run(args) -> exit code`; a `ConfigError` from a
verb is its user's mistake: one line on stderr and exit code 2. The commands of earlier releases still run, as
aliases that say on stderr what they are now (`ALIASES`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from specplug import __version__
from specplug.core.errors import ConfigError

# Commands of earlier releases -> the command that does the same now.
ALIASES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("smc-report",): ("bench", "smc-report"),
    ("smc-ab",): ("bench", "smc-ab"),
    ("smc-overhead",): ("bench", "overhead", "--method", "smc"),
    ("csd", "overhead"): ("bench", "overhead", "--method", "csd"),
    ("toolspec", "overhead"): ("bench", "overhead", "--method", "toolspec"),
}
GLOBAL_FLAGS = ("-v", "--verbose")


def add_verb(
    verbs: argparse._SubParsersAction,
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add a verb to a group (`description`: shown by --help, as written)."""
    parser = verbs.add_parser(
        name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specplug",
        description="Speculative-decoding plugins (SMC-SD, CSD, ToolSpec) for vLLM, SGLang and TensorRT-LLM.",
    )
    parser.add_argument("--version", action="version", version=f"specplug {__version__}")
    parser.add_argument(*GLOBAL_FLAGS, action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from specplug import assets_cli, doctor, methods_cli
    from specplug.bench import cli as bench_cli
    from specplug.draft import cli as draft_cli

    doctor.add_parser(sub)
    assets_cli.add_parser(sub)
    bench_cli.add_parser(sub)
    methods_cli.add_parsers(sub)
    draft_cli.add_parser(sub)
    return parser


def resolve_aliases(argv: list[str]) -> list[str]:
    """The command line with an earlier release's command replaced by today's, said in one line on stderr."""
    start = 0
    while start < len(argv) and argv[start] in GLOBAL_FLAGS:
        start += 1
    words = argv[start:]
    for old, new in ALIASES.items():
        if tuple(words[: len(old)]) == old:
            return _deprecated(argv[:start], old, new, words[len(old) :])
    if words[:1] == ["bench"] and len(words) > 1 and words[1].startswith("-") and words[1] not in ("-h", "--help"):
        return _deprecated(argv[:start], ("bench",), ("bench", "run"), words[1:])  # `specplug bench --flags`
    return argv


def _deprecated(flags: list[str], old: tuple[str, ...], new: tuple[str, ...], rest: list[str]) -> list[str]:
    print(f"specplug: '{' '.join(old)}' is deprecated; use 'specplug {' '.join(new)}'", file=sys.stderr)
    return [*flags, *new, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    typed = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args = parser.parse_args(resolve_aliases(typed))
    args.argv = typed  # recorded in reports as the full command, as the user typed it
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    func: Any = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except ConfigError as exc:
        name = " ".join(w for w in (args.command, getattr(args, "verb", None)) if w)
        print(f"specplug {name}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
