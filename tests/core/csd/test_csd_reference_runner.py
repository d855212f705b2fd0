"""CSD through the reference runner on a tiny random Llama: λ=∞ is greedy decoding token for token, and after a
rescue the target's next choice is conditioned on the rescued token."""

from __future__ import annotations

import math

import torch

from specplug.core.csd.config import CSDConfig
from specplug.core.csd.memory import CorrectionMemory
from specplug.core.csd.verifier import CalibratedChainVerifier
from specplug.core.proposers.draft_model import DraftModelProposer
from specplug.core.proposers.ngram import NgramProposer
from specplug.reference.runner import ReferenceRunner

from ...tooling.reference.conftest import tiny_llama  # noqa: F401  (fixture)


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(1, 97, (n,), generator=gen).tolist() * 3 for n in (5, 9, 3, 12)]


def _draft(model: torch.nn.Module) -> DraftModelProposer:
    """A weak but real drafter: the tiny target with its last layer dropped."""
    import copy

    weak = copy.deepcopy(model)
    weak.model.layers = weak.model.layers[:1]
    weak.config.num_hidden_layers = 1
    return DraftModelProposer(weak, num_speculative_tokens=4)


def test_lambda_infinity_is_greedy_decoding_and_counts_every_rejection(tiny_llama) -> None:  # noqa: F811
    runner = ReferenceRunner(tiny_llama)
    ar = runner.generate(_prompts(), 24)
    for proposer in (NgramProposer(num_speculative_tokens=3, prompt_lookup_min=1), _draft(tiny_llama)):
        verifier = CalibratedChainVerifier(CorrectionMemory(), CSDConfig(lam=math.inf))
        got = runner.generate(_prompts(), 24, proposer=proposer, verifier=verifier)
        assert got.tokens == ar.tokens
        assert got.stats.rescued == 0
        # Each step with a draft ends in at most one rejection, and calibration counts exactly those.
        steps = zip(got.stats.accepted_per_step, got.stats.proposed_per_step, strict=True)
        rejections = sum(1 for accepted, proposed in steps if accepted < proposed)
        assert verifier.memory.observations == rejections > 0


def test_tokens_after_a_rescue_follow_the_target_given_the_rescued_token(tiny_llama) -> None:  # noqa: F811
    runner = ReferenceRunner(tiny_llama)
    # λ=1 and a loose τ: every near-miss of the weak drafter is rescued, so rescues happen on every prompt.
    verifier = CalibratedChainVerifier(CorrectionMemory(), CSDConfig(lam=1, tau=1e-3))
    got = runner.generate(_prompts(), 20, proposer=_draft(tiny_llama), verifier=verifier)
    ar = runner.generate(_prompts(), 20)
    assert got.stats.rescued > 0 and got.tokens != ar.tokens  # lossy, as CSD is
    # Every committed token is either the target's arg-max after the committed prefix, or a token within ln τ of
    # it (a rescue): checked with a fresh, uncached forward over the exact committed sequence.
    rescues = 0
    with torch.no_grad():
        for prompt, out in zip(_prompts(), got.tokens, strict=True):
            logits = tiny_llama(input_ids=torch.tensor([prompt + out])).logits[0, len(prompt) - 1 : -1]
            top = logits.max(dim=-1).values
            chosen = logits.gather(1, torch.tensor(out).unsqueeze(1)).squeeze(1)
            assert bool((chosen - top >= math.log(1e-3) - 1e-4).all())
            rescues += int((chosen < top - 1e-6).sum())
    assert rescues == got.stats.rescued
