"""The `specplug` command. Subcommands import their heavy dependencies only when they run."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from specplug import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specplug",
        description="Speculative-decoding plugins (SMC-SD, CSD, ToolSpec) for vLLM, SGLang and TensorRT-LLM.",
    )
    parser.add_argument("--version", action="version", version=f"specplug {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    doctor = sub.add_parser("doctor", help="check the installation: engines, versions, plugins, methods")
    doctor.add_argument(
        "--engine",
        action="append",
        default=[],
        choices=["vllm", "sglang", "trtllm"],
        help="require this engine to be installed, tested and loading specplug (repeatable); "
        "imports the engine, so it takes a few seconds",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")

    from specplug import assets_cli, csd_cli, smc_overhead, smc_report, smc_vllm_ab, toolspec_cli
    from specplug.bench import cli as bench_cli

    assets_cli.add_parser(sub)
    bench_cli.add_parser(sub)
    smc_report.add_parser(sub)
    smc_vllm_ab.add_parser(sub)
    smc_overhead.add_parser(sub)
    csd_cli.add_parser(sub)
    toolspec_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in reports as the full command
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "doctor":
        from specplug.doctor import run_doctor

        return run_doctor(engines=args.engine, as_json=args.json)
    if args.command == "assets":
        from specplug import assets_cli

        return assets_cli.run(args)
    if args.command == "bench":
        from specplug.bench import cli as bench_cli

        return bench_cli.run(args)
    if args.command == "csd":
        from specplug import csd_cli

        return csd_cli.run(args)
    if args.command == "toolspec":
        from specplug import toolspec_cli

        return toolspec_cli.run(args)
    if args.command == "smc-overhead":
        from specplug import smc_overhead

        return smc_overhead.run(args)
    if args.command == "smc-ab":
        from specplug import smc_vllm_ab

        return smc_vllm_ab.run(args)
    if args.command == "smc-report":
        from specplug import smc_report

        return smc_report.run(args)
    parser.error(f"unknown command {args.command}")  # argparse exits; kept for type checkers
    return 2


if __name__ == "__main__":
    sys.exit(main())
