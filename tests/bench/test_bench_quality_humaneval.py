"""HumanEval sandbox: pass@1 (right code passes; wrong, raising, looping, exiting early or greedy code fails) and
per-test outcomes (each test of `check` recorded on its own, so failing replies can still be compared with ar's)."""

from __future__ import annotations

import statistics
import time

import pytest

from specplug.assets.datasets import dataset_status, load_dataset
from specplug.bench.quality import Scorer, agreement_with
from specplug.bench.quality import humaneval as he
from specplug.bench.quality.humaneval import (
    agrees,
    build_program,
    extract_code,
    functional_agreement,
    run_program,
    score,
    split_tests,
)

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


# ------------------------------------------------------------------------------------------- per-test outcomes

# Four tests: two asserts, setup then an assert, and a loop of asserts (one test).
TESTS = GOLD | {
    "test": (
        "def check(candidate):\n"
        "    assert candidate([1, 2, 3]) == 6\n"
        "    assert candidate([]) == 0\n"
        "    xs = [5, 5]\n"
        "    assert candidate(xs) == 10, 'five and five'\n"
        "    for n in range(3):\n"
        "        assert candidate([n]) == n\n"
    )
}
ALL_PASS = ("pass",) * 4


def outcomes(body: str, gold: dict = TESTS, **kwargs: float) -> tuple[str, ...]:
    return he.test_outcomes(reply(body), gold, PROMPT, **kwargs)


def test_splitting_counts_asserts_loops_and_not_setup_or_helpers() -> None:
    assert split_tests(TESTS["test"])[1] == 4
    helper = "def check(candidate):\n    def ok(x):\n        assert x\n    ok(candidate([1]))\n    assert True\n"
    assert split_tests(helper)[1] == 1  # the nested def's assert runs only when called: its statements are setup
    with pytest.raises(ValueError, match="no top-level check"):
        split_tests("def test(candidate):\n    assert candidate(1)\n")
    with pytest.raises(ValueError, match="no assert"):
        split_tests("def check(candidate):\n    candidate(1)\n")


def test_a_correct_solution_passes_every_test() -> None:
    assert outcomes("    return sum(xs)\n") == ALL_PASS
    assert he.test_outcomes(GOLD["canonical_solution"], TESTS, PROMPT) == ALL_PASS  # body continuation


def test_a_wrong_solution_fails_some_tests_not_all() -> None:
    assert outcomes("    return len(xs)\n") == ("fail", "pass", "fail", "fail")


def test_raising_is_an_error_of_that_test_only() -> None:
    assert outcomes("    if not xs:\n        raise KeyError(0)\n    return sum(xs)\n") == (
        "pass",
        "error:KeyError",
        "pass",
        "pass",
    )
    # The solution's own failed assert is an error, not a failed test.
    assert outcomes("    assert xs\n    return sum(xs)\n")[1] == "error:AssertionError"


def test_a_looping_test_times_out_and_the_rest_still_run() -> None:
    began = time.perf_counter()
    assert outcomes("    while not xs:\n        pass\n    return sum(xs)\n", per_test_s=0.5) == (
        "pass",
        "timeout",
        "pass",
        "pass",
    )
    assert time.perf_counter() - began < 5


def test_a_program_that_hangs_past_its_budget_times_out_everywhere() -> None:
    began = time.perf_counter()
    # Loops at load time and swallows the first alarm, then loops again: the alarm keeps firing until one escapes.
    hang = "    return 0\ntry:\n    while True:\n        pass\nexcept BaseException:\n    pass\nwhile True:\n    pass\n"
    assert outcomes(hang, timeout_s=1.0, per_test_s=0.5) == ("timeout",) * 4
    assert time.perf_counter() - began < 4  # no wait for the 6 s wall limit
    # Tests that each loop: after the budget is spent, the rest are not even started.
    assert outcomes("    while True:\n        pass\n", timeout_s=1.0, per_test_s=0.4) == ("timeout",) * 4
    assert time.perf_counter() - began < 15


def test_a_solution_that_does_not_load_errs_on_every_test() -> None:
    assert outcomes("    return (\n") == ("error:SyntaxError",) * 4
    assert he.test_outcomes("total = 1\n", TESTS, "") == ("error:NameError",) * 4  # add_all never defined
    assert outcomes("    return 0\nimport sys\nsys.exit(0)\n") == ("error:SystemExit",) * 4
    assert outcomes("    return 0\nimport os\nos._exit(0)\n") == ("error:Exit",) * 4  # no result line at all


def test_exiting_inside_a_test_is_that_tests_error() -> None:
    assert outcomes("    if not xs:\n        import sys\n        sys.exit(0)\n    return sum(xs)\n")[:2] == (
        "pass",
        "error:SystemExit",
    )


def test_printed_output_cannot_forge_or_drown_the_outcomes() -> None:
    forged = "specplug-outcomes-0000:" + '[\\"pass\\", \\"pass\\", \\"pass\\", \\"pass\\"]'
    body = f'    print("{forged}")\n    return len(xs)\nprint("{forged}")\n'
    assert outcomes(body) == ("fail", "pass", "fail", "fail")
    # The real marker is not in the solution's environment, and its fd 1 is not the channel the runner reports on.
    steal = "import os\nmark = os.environ.get('SPECPLUG_OUTCOMES_MARKER', 'none:')\n"
    steal += "os.write(1, (mark + '[]\\n').encode())\n"
    assert outcomes(f"    return len(xs)\n{steal}") == ("fail", "pass", "fail", "fail")
    chatty = "    print('x' * 400_000)\n    return sum(xs)\n"  # 2.4 MB printed: past the 1 MiB file-size limit
    assert outcomes(chatty) == ALL_PASS


def test_a_failed_setup_statement_errs_the_tests_after_it() -> None:
    gold = GOLD | {
        "test": "def check(candidate):\n    assert candidate([1]) == 1\n    n = candidate(None)\n"
        "    assert n == 0\n    assert candidate([]) == 0\n"
    }
    assert outcomes("    return sum(xs)\n", gold) == ("pass", "error:TypeError", "error:TypeError")


def test_unseeded_random_test_inputs_are_the_same_for_every_run() -> None:
    draws = "".join("    assert candidate([random.randint(0, 1)]) == 1\n" for _ in range(8))
    gold = GOLD | {"test": f"import random\n\ndef check(candidate):\n{draws}"}
    first = outcomes("    return sum(xs)\n", gold)
    assert set(first) == {"pass", "fail"} and outcomes("    return sum(xs)\n", gold) == first


def test_agreement_of_identical_and_different_outcomes() -> None:
    right, wrong = outcomes("    return sum(xs)\n"), outcomes("    return len(xs)\n")
    assert agrees(right, outcomes("    return sum(list(xs))\n")) and functional_agreement(right, right) == 1.0
    assert not agrees(right, wrong) and functional_agreement(right, wrong) == 0.25
    both_wrong = outcomes("    return len(xs) * 1\n")  # fails exactly like `wrong`: full agreement, pass@1 of 0
    assert agrees(wrong, both_wrong) and functional_agreement(wrong, both_wrong) == 1.0
    with pytest.raises(ValueError, match="different problems"):
        functional_agreement(right, right[:2])


def test_scorer_outcomes_are_cached_and_agreement_is_per_prompt_and_per_test() -> None:
    from specplug.assets.datasets import PromptRecord

    record = PromptRecord("HumanEval/x", "humaneval", "code", [{"role": "user", "content": "?"}], gold=TESTS)
    record.extra["prompt"] = PROMPT
    mtbench = PromptRecord("81", "mtbench", "writing", [{"role": "user", "content": "?"}], gold={"x": 1})
    texts = {1: reply("    return sum(xs)\n"), 2: reply("    return len(xs)\n")}
    decoded: list[int] = []

    def decode(ids: list[int]) -> str:
        decoded.append(ids[0])
        return texts.get(ids[0], "")

    scorer = Scorer([record, record, mtbench], decode)
    ar = scorer.outcomes({0: [1], 1: [2], 2: [9]})
    assert ar == {0: ALL_PASS, 1: ("fail", "pass", "fail", "fail")} and 9 not in decoded
    arm = scorer.outcomes({0: [1], 1: [1]})
    assert agreement_with(ar, arm) == {
        "functional_agreement": 0.5,
        "test_agreement": 5 / 8,
        "agreement_scored": 2,
        "agreement_differs": [1],
    }
    assert agreement_with(ar, ar)["functional_agreement"] == 1.0
    assert agreement_with(ar, {}) == {"functional_agreement": None}


@pytest.mark.skipif(not dataset_status("humaneval").ok, reason="HumanEval not pulled (specplug assets pull humaneval)")
def test_every_canonical_solution_passes_every_one_of_its_tests() -> None:
    records = load_dataset("humaneval")
    assert len(records) == 164
    counts, failed = [], {}
    for r in records:
        result = he.test_outcomes(r.gold["canonical_solution"], r.gold, r.extra["prompt"])
        counts.append(len(result))
        if set(result) != {"pass"}:
            failed[r.id] = result
    assert not failed
    assert min(counts) >= 1 and statistics.median(counts) >= 3
