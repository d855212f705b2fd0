"""CSD's verify hook around SGLang's REAL `eagle_sample`, fed by SGLang's real n-gram corpus — on CPU.

One fresh process (TRITON_INTERPRET=1 must be set before Triton is imported, and the process's SGLang globals are
changed) runs SGLang 0.5.23's own code for one NGRAM verify step of a greedy batch:
- `NgramCorpus` (sglang/srt/speculative/cpp_ngram/ngram_corpus.py; its C++ is JIT-built by SGLang's loader, no GPU
  needed) drafts the trees: `batch_put`, then `batch_get` gives the draft tokens and the tree mask;
- `reconstruct_indices_from_tree_mask_func` (sglang/kernels/ops/speculative/reconstruct_tree.py) turns the mask into
  positions and `retrieve_*` links with its Triton kernel, in Triton's interpreter;
- a real `NgramVerifyInput` (sglang/srt/speculative/ngram_info.py) carries them, as `NGRAMWorker` builds it;
- `eagle_sample` (sglang/srt/speculative/eagle_utils.py) runs unchanged: NaN check, logit bias applied in place,
  arg-max, `verify_tree_greedy_func` -> `verify_tree_greedy_triton` (spec_tree.py) in the interpreter;
- the verify hook is put in place by SGLang's real `HookRegistry` (`install_verify_hook`) on the real
  `sglang.srt.speculative.ngram_worker.eagle_sample`, which is called as `NGRAMWorker.forward_batch_generation` calls
  it, inside `verify_hook.activated(runtime)` with a `CSDRuntime` (a CSD session whose memory file holds seeded pairs).
The batch's requests are SGLang `Req`s with greedy `SamplingParams`, its sampling info a `SamplingBatchInfo`, its
logits a `LogitsProcessorOutput`; the batch itself is a stand-in namespace with the fields `eagle_sample` and the hook
read (`ScheduleBatch` needs the scheduler's pools).

What is not SGLang's own, and why:
- stub `torchvision` (`transforms`, `transforms.functional` with an `InterpolationMode` enum): not installed, and
  `sglang/srt/multimodal/internvl_utils.py:5-7` imports it at module level on `eagle_utils`' import chain; installed
  after `import sglang`, so transformers has already found torchvision absent;
- stub `sgl_kernel` / `sgl_kernel.speculative`: not installed; only `reconstruct_tree.py:47-50` needs a name from it
  at import (`reconstruct_indices_from_tree_mask`, bound to a function that raises if called), and only while
  `reconstruct_tree` and `ngram_worker` are imported — removed from `sys.modules` afterwards, and every other lookup
  of a non-dunder name on it is recorded and must not happen;
- `spec_tree._is_xpu = True` and `reconstruct_tree._is_xpu = True`: on a plain CPU (neither CUDA, HIP, MUSA, NPU nor
  `SGLANG_USE_CPU_ENGINE=1`) `verify_tree_greedy_func` reaches `reject_out_of_tree_path` (a no-op for in-tree
  platforms) and verifies NOTHING — checked below: `predict` stays zeros, `accept_index` stays -1 — and
  `reconstruct_indices_from_tree_mask_func` would call the sgl_kernel op; the XPU flag selects SGLang's own Triton
  implementations of both;
- the server context is SGLang's (`create_context(ServerArgs(model_path="dummy", speculative_algorithm="CSD",
  device="cpu"), role="scheduler")` + `use_context`), after our `register_csd()` made "CSD" a known algorithm.
Checked: SGLang's greedy verdict equals an independent arg-max walk of the corpus trees (and accepts several drafts
where the target agrees); with λ = ∞ the hooked call returns SGLang's tensors bit for bit; with seeded pairs, the
hooked call departs from SGLang exactly on the rows where `CalibratedTreeVerifier` (specplug.core.csd.verifier)
accepts more, with the core's accepted path and committed tokens, including a rescue that exists only because
SGLang's logit bias was applied before the hook judged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.sglang, pytest.mark.slow]

# Rows of the batch (corpus queries) and what the logits make of each; see ROWS in the child.
EXACT, RESCUE_ROOT, RESCUE_DEEP, UNSEEDED, BIASED, FAR, PADDING = range(7)
N = 8  # nodes per tree (root + 7 drafts), the child's N

CHILD = r'''
import enum, json, math, os, sys, types
from array import array
from pathlib import Path

assert os.environ.get("TRITON_INTERPRET") == "1", "Triton's interpreter must be chosen before Triton is imported"
import sglang  # transformers (imported by sglang's HF patches) decides here that torchvision is absent

facts = {"stubbed": []}


def stub(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    facts["stubbed"].append(name)
    return module


class InterpolationMode(enum.Enum):  # the one name internvl_utils.py:7 imports
    NEAREST = 0
    BILINEAR = 2
    BICUBIC = 3


functional = stub("torchvision.transforms.functional", InterpolationMode=InterpolationMode)
transforms = stub("torchvision.transforms", InterpolationMode=InterpolationMode, functional=functional)
stub("torchvision", transforms=transforms)

import torch
from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from sglang.srt.managers.schedule_batch import Req
from sglang.srt.model_executor.forward_batch_info import ForwardMode
from sglang.srt.runtime_context import create_context, use_context
from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo
from sglang.srt.sampling.sampling_params import SamplingParams
from sglang.srt.server_args import ServerArgs
from sglang.srt.speculative import eagle_utils
from sglang.srt.speculative.cpp_ngram.ngram_corpus import NgramCorpus
from sglang.srt.speculative.ngram_info import NgramVerifyInput
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

# sgl_kernel: present only while the two modules that import a name from it at load time are imported.
asked = []


class SglKernelStub(types.ModuleType):
    def __getattr__(self, name):
        if not name.startswith("__"):
            asked.append(name)
        raise AttributeError(name)


def sgl_kernel_op_called(*args, **kwargs):
    raise AssertionError("the stubbed sgl_kernel op was called")


sys.modules["sgl_kernel"] = SglKernelStub("sgl_kernel")
facts["stubbed"].append("sgl_kernel")
stub("sgl_kernel.speculative", reconstruct_indices_from_tree_mask=sgl_kernel_op_called)
from sglang.kernels.ops.speculative import reconstruct_tree, spec_tree
from sglang.srt.speculative import ngram_worker

del sys.modules["sgl_kernel"], sys.modules["sgl_kernel.speculative"]
facts["sgl_kernel_names_asked"] = asked

from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.csd.config import CSDConfig
from specplug.core.csd.verifier import CalibratedTreeVerifier
from specplug.core.types import DraftBatch, TokenVerdict
from specplug.plugins.sglang_csd import verify_hook
from specplug.plugins.sglang_csd.registration import register_csd
from specplug.plugins.sglang_csd.runtime import CSDRuntime
from specplug.plugins.sglang_csd.settings import CSDSettings

csd_algo = register_csd()
context = create_context(
    ServerArgs(model_path="dummy", speculative_algorithm="CSD", device="cpu", speculative_num_draft_tokens=8),
    role="scheduler",
)

# --- SGLang's n-gram corpus drafts the trees ---------------------------------------------------------------------
N, VOCAB, LAM, TAU = 8, 128, 3, 0.1
corpus = NgramCorpus(max_trie_depth=8, min_bfs_breadth=1, max_bfs_breadth=4, draft_token_num=N, capacity=10000)
corpus.batch_put([
    [1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 10, 11, 12],
    [20, 21, 22, 23, 24, 25, 26, 27, 28, 29],
    [30, 31, 32, 33, 34, 35], [30, 31, 32, 36, 37, 38], [31, 32, 33, 39, 40],
    [50, 51, 52, 53, 54, 55, 56, 57, 58],
    [60, 61, 62, 63, 64, 65, 66, 67, 68],
])
corpus.synchronize()
prompts = [[9, 1, 2, 3, 4], [19, 20, 21, 22], [29, 30, 31, 32], [49, 50, 51], [59, 60, 61, 62], [59, 60, 61, 62],
           [99, 98, 97]]
rids = [f"req{b}" for b in range(len(prompts))]
BS = len(prompts)
drafts, mask = corpus.batch_get(rids, prompts, [len(p) for p in prompts])
tokens = drafts.reshape(BS, N)
ancestors = mask.reshape(BS, N, N).astype(bool)
# Independent reading of the corpus tree: a node's parent is its deepest strict ancestor.
parents = [[max((j for j in range(i) if ancestors[b, i, j]), default=-1) for i in range(N)] for b in range(BS)]
facts["trees"] = [[tokens[b].tolist(), parents[b]] for b in range(BS)]

# --- SGLang's verify input -----------------------------------------------------------------------------------
facts["flags_before"] = {"spec_tree._is_xpu": spec_tree._is_xpu, "reconstruct_tree._is_xpu": reconstruct_tree._is_xpu,
                         "spec_tree._is_cpu": spec_tree._is_cpu}
reconstruct_tree._is_xpu = True
seq_lens = torch.tensor([len(p) for p in prompts], dtype=torch.int64)
tree_mask = torch.from_numpy(mask).to(torch.bool)
positions = torch.empty(BS * N, dtype=torch.int64)
retrieve_index, next_token, next_sibling = (torch.empty((BS, N), dtype=torch.int64) for _ in range(3))
reconstruct_tree.reconstruct_indices_from_tree_mask_func(
    tree_mask, seq_lens, positions, retrieve_index, next_token, next_sibling, BS, N
)
host_links = ngram_worker._derive_tree_links(mask, BS, N)
facts["links_equal_host_twin"] = torch.equal(next_token, host_links[0]) and torch.equal(next_sibling, host_links[1])
depth = [[0] * N for _ in range(BS)]
for b in range(BS):
    for i in range(1, N):
        depth[b][i] = depth[b][parents[b][i]] + 1
facts["positions_ok"] = positions.view(BS, N).tolist() == [[int(seq_lens[b]) + d for d in depth[b]] for b in range(BS)]
facts["retrieve_index_ok"] = torch.equal(retrieve_index, torch.arange(BS * N).view(BS, N))


def verify_input():
    return NgramVerifyInput(
        draft_token=torch.from_numpy(drafts).clone(), custom_mask=tree_mask, positions=positions,
        retrieve_index=retrieve_index, retrieve_next_token=next_token, retrieve_next_sibling=next_sibling,
        draft_token_num=N,
    )


# --- the target's logits, row by row ---------------------------------------------------------------------------
# node -> (arg-max token, {token: logit}) ; everything else is noise in [-4, -2), token 0 (padding) far below.
TOP = 5.0
ROWS = [
    {0: (5, {}), 1: (6, {}), 3: (7, {}), 5: (8, {}), 7: (110, {})},  # EXACT: SGLang accepts 5 6 7 8
    {0: (100, {23: TOP + math.log(0.5)}), **{i: (tokens[1][i + 1], {}) for i in range(1, 7)}, 7: (111, {})},
    {0: (33, {}), 1: (101, {34: TOP + math.log(0.5)}), 4: (35, {}), 6: (112, {})},  # RESCUE_DEEP, 2nd child
    {0: (102, {52: TOP + math.log(0.5)}), 1: (53, {}), 2: (54, {})},  # UNSEEDED: (52, 102) was never seen
    {0: (104, {63: TOP + math.log(0.01)}), 1: (64, {}), 2: (65, {})},  # BIASED: too far, until SGLang's bias
    {0: (104, {63: TOP + math.log(0.01)}), 1: (64, {}), 2: (65, {})},  # FAR: the same, no bias
    {0: (105, {})},  # PADDING: the corpus had no match, only token-0 padding under the root
]
SEEDED = [(23, 100, LAM - 1), (34, 101, LAM - 1), (52, 103, LAM - 1), (63, 104, LAM - 1)]
generator = torch.Generator().manual_seed(0)
logits = torch.rand((BS * N, VOCAB), generator=generator) * 2 - 4
logits[:, 0] = -30.0
for b, row in enumerate(ROWS):
    for node, (top, others) in row.items():
        logits[b * N + node, top] = TOP
        for token, value in others.items():
            logits[b * N + node, token] = value
logit_bias = torch.zeros((BS, VOCAB))
logit_bias[4, 63] = 3.0  # BIASED: ln 0.01 + 3 > ln 0.1 — a rescue only once SGLang has added the bias
processed = logits + logit_bias.repeat_interleave(N, dim=0)


def argmax_walk(b):
    """(accepted nodes, committed tokens) of greedy tree verification, written from the tree alone."""
    node, path, committed = 0, [], []
    while True:
        best = int(processed[b * N + node].argmax())
        committed.append(best)
        children = [k for k in range(N) if parents[b][k] == node and int(tokens[b][k]) == best]
        if not children:
            return path, committed
        node = children[0]
        path.append(node)


requests = []
for b in range(BS):
    req = Req(rids[b], "", array("q", prompts[b]), SamplingParams(temperature=0.0))  # temperature 0: top_k = 1
    requests.append(req)
sampling_info = SamplingBatchInfo(
    temperatures=torch.tensor([[r.sampling_params.temperature] for r in requests]),
    top_ps=torch.tensor([r.sampling_params.top_p for r in requests]),
    top_ks=torch.tensor([r.sampling_params.top_k for r in requests], dtype=torch.int32),
    min_ps=torch.zeros(BS),
    is_all_greedy=all(r.sampling_params.top_k <= 1 for r in requests),
    is_any_greedy=True,
    need_top_p_sampling=False,
    need_top_k_sampling=False,
    need_min_p_sampling=False,
    vocab_size=VOCAB,
    device="cpu",
    logit_bias=logit_bias,
)


def batch(algorithm):
    """The fields of `ScheduleBatch` that eagle_sample and the hook read."""
    return types.SimpleNamespace(
        forward_mode=ForwardMode.TARGET_VERIFY, seq_lens=seq_lens, device="cpu", return_logprob=False,
        sampling_info=sampling_info, reqs=requests, spec_algorithm=algorithm,
    )


def call(sample, algorithm=csd_algo):
    """One verify, as ngram_worker.py:475-485 makes it; fresh logits (eagle_sample processes them in place)."""
    out = LogitsProcessorOutput(next_token_logits=logits.clone())
    with use_context(context):
        predict, lens, index = sample(verify_input(), batch(algorithm), out, None, watermark_state=None)
    facts.setdefault("logits_processed_in_place", True)
    facts["logits_processed_in_place"] &= torch.equal(out.next_token_logits, processed)
    return predict, lens, index


def listed(result):
    return [t.tolist() for t in result]


# --- SGLang's verify with no kernel selected: silently nothing ------------------------------------------------
# Held in a dict, not a module global: HookRegistry's _propagate_patch rebinds every module global (this script's
# too) that is the original function.
real = {"eagle_sample": eagle_utils.eagle_sample}
predict, _, index = call(real["eagle_sample"])
facts["noop_without_flag"] = bool((predict == 0).all()) and bool((index == -1).all())

# --- SGLang's greedy verdict, the real kernel -------------------------------------------------------------------
spec_tree._is_xpu = True
sglang_verdict = call(real["eagle_sample"])
facts["sglang"] = listed(sglang_verdict)
walks = [argmax_walk(b) for b in range(BS)]
facts["walk"] = [[path, committed] for path, committed in walks]
want_lens = [len(path) + 1 for path, _ in walks]
want_index = [[b * N] + [b * N + k for k in path] + [-1] * (N - len(path) - 1) for b, (path, _) in enumerate(walks)]
predict, lens, index = sglang_verdict
facts["sglang_equals_walk"] = (
    lens.tolist() == want_lens
    and index.tolist() == want_index
    and all(predict[index[b, : lens[b]]].tolist() == walks[b][1] for b in range(BS))
    and int((predict != 0).sum()) == sum(want_lens)
)

# --- the hook, put in place by SGLang's HookRegistry --------------------------------------------------------------
verify_hook.install_verify_hook()
hooked = ngram_worker.eagle_sample
facts["registry_wrapped_real_target"] = [
    hooked is not real["eagle_sample"], hooked.__wrapped__ is real["eagle_sample"], verify_hook.hook_in_effect()
]
facts["eagle_utils_binding_patched_too"] = eagle_utils.eagle_sample is hooked

memory_file = Path(sys.argv[1]) / "memory.json"
bank = CorrectionMemoryBank()
bank.memory("default").add_counts([(d << 32) | t for d, t, _ in SEEDED], [c for _, _, c in SEEDED])
bank.save(memory_file)


def runtime(**config):
    return CSDRuntime(CSDSettings(config=CSDConfig(memory_path=str(memory_file), **config)), model_path="dummy",
                      num_draft_tokens=N)


lossless = runtime(lam=math.inf, tau=TAU)
with verify_hook.activated(lossless):
    facts["lossless"] = listed(call(hooked))
facts["lossless_steps"] = lossless.steps

calibrated = runtime(lam=LAM, tau=TAU)
with verify_hook.activated(calibrated):
    facts["other_algorithm"] = listed(call(hooked, SpeculativeAlgorithm.from_string("NGRAM")))
    facts["steps_after_other_algorithm"] = calibrated.steps
    facts["calibrated"] = listed(call(hooked))
facts["calibrated_stats"] = {"steps": calibrated.steps, "rescued": calibrated.rescued_tokens,
                             "extra": calibrated.extra_tokens, "failures": calibrated.failures}
facts["outside_worker"] = listed(call(hooked))

# --- what specplug's core verifier says, on a DraftBatch read from the corpus tree directly --------------------
draft = DraftBatch(
    tokens=torch.from_numpy(drafts).view(BS, N)[:, 1:].clone(),
    num_tokens=torch.full((BS,), N - 1),
    parents=torch.tensor(parents)[:, 1:] - 1,
)
memory = CorrectionMemoryBank.load(memory_file).memory("default")
core = CalibratedTreeVerifier(memory, CSDConfig(lam=LAM, tau=TAU), update_memory=False).verify(
    draft, processed.view(BS, N, VOCAB)
)
facts["core"] = {
    "num_accepted": core.num_accepted.tolist(),
    "path": [core.accepted_path[b, : int(core.num_accepted[b])].tolist() for b in range(BS)],
    "committed": [core.output_tokens[b, : int(core.num_accepted[b]) + 1].tolist() for b in range(BS)],
    "rescued": [  # the rescued nodes (specplug numbering) on the accepted path
        [int(core.accepted_path[b, j]) for j in (core.verdicts[b] == TokenVerdict.RESCUED).nonzero().view(-1)]
        for b in range(BS)
    ],
}
print(json.dumps(facts))
'''


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("sglang", reason="SGLang is not installed")
    pytest.importorskip("triton", reason="Triton is not installed")
    work = tmp_path_factory.mktemp("real_eagle_sample")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.setdefault("SGLANG_JIT_CACHE_DIR", str(work / "jit"))  # the corpus' C++ build stays out of ~/.cache
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(work)], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows(result: list, b: int) -> tuple:
    predict, lens, index = result
    return predict[b * N : (b + 1) * N], lens[b], index[b]


def test_only_the_named_modules_are_stubbed(facts: dict) -> None:
    assert sorted(facts["stubbed"]) == [
        "sgl_kernel",
        "sgl_kernel.speculative",
        "torchvision",
        "torchvision.transforms",
        "torchvision.transforms.functional",
    ]
    assert facts["sgl_kernel_names_asked"] == [], facts["sgl_kernel_names_asked"]


def test_sglang_builds_the_verify_tree_from_its_corpus(facts: dict) -> None:
    trees = facts["trees"]
    assert trees[EXACT] == [[4, 5, 10, 6, 11, 7, 12, 8], [-1, 0, 0, 1, 2, 3, 4, 5]]  # two branches under the root
    assert trees[RESCUE_DEEP][1][:5] == [-1, 0, 0, 1, 1]  # 33 has two children: 39, then 34
    assert trees[PADDING] == [[97, 0, 0, 0, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0, 0, 0]]  # no match: padding
    assert facts["links_equal_host_twin"] and facts["positions_ok"] and facts["retrieve_index_ok"]


def test_sglangs_greedy_verify_runs_for_real_and_equals_an_argmax_walk(facts: dict) -> None:
    assert not any(facts["flags_before"].values()), facts["flags_before"]
    assert facts["noop_without_flag"]  # plain CPU: verify_tree_greedy_func does nothing at all
    assert facts["sglang_equals_walk"], (facts["sglang"], facts["walk"])
    lens = facts["sglang"][1]
    assert lens[EXACT] == 5 and lens[RESCUE_DEEP] == 2  # several drafts accepted where the target agreed
    assert lens[RESCUE_ROOT] == lens[UNSEEDED] == lens[BIASED] == lens[FAR] == lens[PADDING] == 1
    assert facts["logits_processed_in_place"]  # SGLang added the logit bias to the logits the hook then judges


def test_hook_is_applied_by_sglangs_registry_to_the_real_target(facts: dict) -> None:
    assert facts["registry_wrapped_real_target"] == [True, True, True]
    assert facts["eagle_utils_binding_patched_too"]  # _propagate_patch: every module's binding
    assert facts["outside_worker"] == facts["sglang"]
    assert facts["other_algorithm"] == facts["sglang"] and facts["steps_after_other_algorithm"] == 0


def test_lossless_csd_returns_sglangs_verdict_bit_for_bit(facts: dict) -> None:
    assert facts["lossless"] == facts["sglang"]
    assert facts["lossless_steps"] == 1  # it did judge the step, and kept SGLang's verdict


def test_rescues_are_exactly_the_core_verifiers(facts: dict) -> None:
    core, sglang, calibrated = facts["core"], facts["sglang"], facts["calibrated"]
    longer = [b for b in range(len(core["num_accepted"])) if core["num_accepted"][b] + 1 > sglang[1][b]]
    assert longer == [RESCUE_ROOT, RESCUE_DEEP, BIASED], core
    assert core["rescued"][RESCUE_ROOT] == [0] and core["rescued"][RESCUE_DEEP] == [3]  # 34 is specplug node 3
    assert core["rescued"][BIASED] == [0]
    for b in range(len(core["num_accepted"])):
        predict, lens, index = rows(calibrated, b)
        if b not in longer:
            assert (predict, lens, index) == rows(sglang, b), b
            continue
        n = core["num_accepted"][b]
        assert lens == n + 1, b
        assert index[: n + 1] == [N * b] + [N * b + k + 1 for k in core["path"][b]], b
        assert index[n + 1 :] == [-1] * (N - 1 - n), b
        assert [predict[i - N * b] for i in index[: n + 1]] == core["committed"][b], b
        assert sum(p != 0 for p in predict) == n + 1, b
    assert core["committed"][RESCUE_ROOT] == [23, 24, 25, 26, 27, 28, 29, 111]
    assert core["committed"][RESCUE_DEEP] == [33, 34, 35, 112]
    stats = facts["calibrated_stats"]
    assert stats["steps"] == 1 and stats["rescued"] == 3 and stats["failures"] == 0
    assert stats["extra"] == sum(core["num_accepted"][b] + 1 - sglang[1][b] for b in longer)
