"""A request's specplug extra args (OpenAI `vllm_xargs`) are checked at validation: malformed ones get vLLM's
validation error (HTTP 400 on the server; `test_vllm_memory_persistence` sends one to a real server)."""

from __future__ import annotations

import pytest

from specplug.plugins.vllm_smc.host import extra_args_problem

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    "extra",
    [None, {}, {"other": 5}, {"toolspec": {}}, {"toolspec": {"tools": [TOOL], "tenant": "alice"}}, {"specplug": {}}],
)
def test_well_formed_extra_args_pass(extra) -> None:
    assert extra_args_problem(extra) is None


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"toolspec": 5}, "must be an object"),
        ({"specplug": "x"}, "must be an object"),
        ({"toolspec": {"tools": "notalist"}}, "list of OpenAI tool objects"),
        ({"toolspec": {"tools": [1, 2]}}, "list of OpenAI tool objects"),
        ({"toolspec": {"tenant": 7}}, "tenant must be a string"),
    ],
)
def test_malformed_extra_args_are_named(extra, fragment: str) -> None:
    problem = extra_args_problem(extra)
    assert problem is not None and fragment in problem
