"""HumanEval pass@1: run the model's function against the dataset's own tests in a sandboxed subprocess.

Why a subprocess and not exec(): generated code can loop forever, eat memory, call sys.exit or crash the
interpreter. Each program runs in a fresh isolated interpreter (`python -I`: no user site, no PYTHON* env, no
cwd on sys.path), in an empty temporary directory, with stdin closed, a minimal environment, resource limits
(address space, CPU seconds, file size, core dumps) set before exec, and its whole process group killed on
timeout. This is containment for honest-but-buggy code, not a security boundary for hostile code.

The SmolLM2 prompt asks for "the full function in a code block" (specplug/assets/datasets.py), so the program is the
dataset prompt (its imports and helpers) followed by the code from the reply's first Python fence; a reply that
does not redefine the entry point is treated as a body continuation of the prompt, HumanEval's original format.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 10.0
MEMORY_BYTES = 1 << 30  # address-space cap; far above what a HumanEval solution needs
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str  # "passed", "failed: <last stderr line>", "timeout"


def extract_code(text: str) -> str:
    """The first fenced code block of the reply (an unterminated one runs to the end), else the whole reply."""
    match = _FENCE.search(text)
    return match.group(1) if match else text


def build_program(completion: str, gold: Mapping[str, Any], prompt: str) -> str:
    """Prompt + the model's code + the dataset's `check` function + `check(entry_point)`."""
    code = extract_code(completion)
    entry = gold["entry_point"]
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        body = f"{prompt}\n{code}"  # the prompt's docstring-only stub is valid Python; the model's def replaces it
    else:
        body = prompt + code
    return f"{body}\n\n{gold['test']}\n\ncheck({entry})\n"


def _limits(timeout_s: float) -> None:  # runs in the child between fork and exec
    import resource

    for limit, value in (
        ("RLIMIT_AS", MEMORY_BYTES),
        ("RLIMIT_CPU", int(timeout_s) + 1),
        ("RLIMIT_FSIZE", 1 << 20),
        ("RLIMIT_CORE", 0),
    ):
        # A platform that refuses a limit still gets the wall timeout.
        if hasattr(resource, limit):
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(getattr(resource, limit), (value, value))


def run_program(program: str, timeout_s: float = TIMEOUT_S) -> Outcome:
    """Run one program in the sandbox. Passed: exit status 0 within the wall timeout AND a random marker printed
    after the program's last line — so code that calls `sys.exit(0)` or `os._exit(0)` before the tests fails."""
    marker = f"specplug-done-{secrets.token_hex(8)}"
    with tempfile.TemporaryDirectory(prefix="specplug-humaneval-") as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(f"{program}\nprint({marker!r}, flush=True)\n", encoding="utf-8")
        # Output goes to files, not pipes: RLIMIT_FSIZE bounds it, and a chatty program cannot fill our memory.
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "program.py"],
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": os.defpath, "PYTHONHASHSEED": "0", "TMPDIR": tmp, "HOME": tmp},
                start_new_session=True,  # its own process group: a timeout kills whatever it started too
                preexec_fn=(lambda: _limits(timeout_s)) if os.name == "posix" else None,
            )
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc)
        if timed_out:
            return Outcome(False, "timeout")
        stdout = (work / "stdout").read_bytes()[-4096:].decode("utf-8", "replace")
        stderr = (work / "stderr").read_bytes()[-4096:].decode("utf-8", "replace")
    if proc.returncode == 0 and marker in stdout:
        return Outcome(True, "passed")
    lines = stderr.strip().splitlines()
    return Outcome(False, f"failed: {lines[-1][:200] if lines else f'exit status {proc.returncode}'}")


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the program's process group (it may have left children behind), then reap the program."""
    with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def score(text: str, gold: Mapping[str, Any], prompt: str, timeout_s: float = TIMEOUT_S) -> bool:
    """pass@1 of one greedy reply to a HumanEval record (`gold` and `extra["prompt"]` from specplug.assets)."""
    return run_program(build_program(text, gold, prompt), timeout_s).passed
