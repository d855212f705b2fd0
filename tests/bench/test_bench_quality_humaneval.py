"""HumanEval pass@1 sandbox: right code passes; wrong, raising, looping, exiting early or greedy code fails."""

from __future__ import annotations

import time

import pytest

from specplug.bench.quality.humaneval import build_program, extract_code, run_program, score

PROMPT = 'from typing import List\n\n\ndef add_all(xs: List[int]) -> int:\n    """Sum of xs."""\n'
GOLD = {
    "entry_point": "add_all",
    "test": "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n",
    "canonical_solution": "    return sum(xs)\n",
}


def reply(body: str) -> str:
    return f"```python\ndef add_all(xs: List[int]) -> int:\n{body}```\n\nThis function adds the numbers."


def test_a_correct_full_function_passes() -> None:
    assert score(reply("    return sum(xs)\n"), GOLD, PROMPT)


def test_a_body_continuation_passes_too() -> None:
    assert score(GOLD["canonical_solution"], GOLD, PROMPT)  # HumanEval's original completion format


def test_a_wrong_solution_fails() -> None:
    assert not score(reply("    return len(xs)\n"), GOLD, PROMPT)


def test_a_raising_solution_fails_with_its_error() -> None:
    outcome = run_program(build_program(reply("    raise ValueError('no')\n"), GOLD, PROMPT))
    assert not outcome.passed and "ValueError" in outcome.reason


def test_an_infinite_loop_times_out_and_is_killed() -> None:
    began = time.perf_counter()
    outcome = run_program(build_program(reply("    while True:\n        pass\n"), GOLD, PROMPT), timeout_s=1.0)
    assert outcome == outcome.__class__(False, "timeout")
    assert time.perf_counter() - began < 5


def test_exiting_before_the_tests_run_is_not_a_pass() -> None:
    assert not score(reply("    return 0\nimport os\nos._exit(0)\n"), GOLD, PROMPT)
    assert not score(reply("    return 0\nimport sys\nsys.exit(0)\n"), GOLD, PROMPT)


def test_memory_is_capped() -> None:
    outcome = run_program("x = bytearray(8 << 30)\n")
    assert not outcome.passed and "MemoryError" in outcome.reason


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("```python\nx = 1\n```\nprose", "x = 1\n"),
        ("Here:\n```py\ny = 2\n```", "y = 2\n"),
        ("```python\nz = 3\n", "z = 3\n"),  # cut off by max_tokens
        ("    return 1\n", "    return 1\n"),
    ],
)
def test_extract_code(text: str, code: str) -> None:
    assert extract_code(text) == code


def test_runs_isolated_in_an_empty_directory() -> None:
    program = (
        "import os, sys\n"
        "assert sorted(os.listdir('.')) == ['program.py', 'stderr', 'stdout'], os.listdir('.')\n"
        "assert os.getcwd() not in sys.path and '' not in sys.path\n"
        "assert 'VIRTUAL_ENV' not in os.environ and 'PYTHONPATH' not in os.environ\n"
    )
    outcome = run_program(program)
    assert outcome.passed, outcome.reason
