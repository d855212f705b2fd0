"""Guard: nothing under core/ may import an engine, statically or at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import specplug.core

ENGINES = ("vllm", "sglang", "tensorrt_llm")
CORE = Path(specplug.core.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            roots.update(a.value.split(".")[0] for a in node.args if isinstance(a, ast.Constant))
    return roots


def test_core_sources_import_no_engine() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 5, f"core/ looks empty at {CORE}"
    offenders = {str(f.relative_to(CORE)): sorted(_imported_roots(f) & set(ENGINES)) for f in files}
    assert {f: e for f, e in offenders.items() if e} == {}


def test_the_static_guard_catches_an_engine_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom vllm.config import VllmConfig\nimportlib.import_module('sglang.srt')\n")
    assert _imported_roots(bad) & set(ENGINES) == {"vllm", "sglang"}


def test_importing_every_core_module_loads_no_engine() -> None:
    modules = [
        "specplug.core." + ".".join(f.relative_to(CORE).with_suffix("").parts)
        for f in sorted(CORE.rglob("*.py"))
        if f.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"loaded = sorted(n for n in sys.modules if n.split('.')[0] in {ENGINES!r})\n"
        "print(loaded); sys.exit(1 if loaded else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
