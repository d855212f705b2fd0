"""SMC-SD's replaced runner methods on vLLM's real metadata classes, with a stand-in runner (no engine, no model).

The stand-in holds only what the methods read (`input_batch.req_ids`, `requests`, `discard_request_mask`,
`drafter.model.compute_logits`); the layouts are vLLM's own (`SpecDecodeMetadata`, `SamplerOutput`). Checked: a
group's first step draws N first tokens from the prompt logits; a cycle through vLLM's flat logits layout gives
exactly the tokens, weights and fork plan of `SMCSampler.cycle` on the same tensors; draft log q is the
log-softmax at T_d of the drawn token; draws are keyed, not batch-layout dependent; a broken group ends with an
error event instead of an exception.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from specplug.core.smc import SMCConfig, SMCSampler
from specplug.plugins.vllm_smc.smc_protocol import EXTRA_ARGS_KEY, ParticleTag, particle_request_id

pytestmark = pytest.mark.vllm

VOCAB, GAMMA, N = 50, 3, 3
CONFIG = SMCConfig(num_particles=N, gamma=GAMMA, draft_temperature=0.6, resample_threshold=1.0)


def _tag(slot: int, prefix_len: int = 0) -> ParticleTag:
    return ParticleTag("g", slot, 0, N, 17, 40, 1.0, 5, prefix_len, (VOCAB - 1,))


class StandInRunner:
    """Stand-in for vLLM's GPUModelRunner: only the attributes SMCRunner reads."""

    def __init__(self, draft_logits: torch.Tensor | None = None) -> None:
        self.requests: dict[str, SimpleNamespace] = {}
        self.input_batch = SimpleNamespace(req_ids=[], num_reqs=0)
        self.discard_request_mask = SimpleNamespace(np=np.zeros(16, dtype=bool))
        model = SimpleNamespace(compute_logits=lambda hidden: draft_logits)
        self.drafter = SimpleNamespace(model=model, propose=None, _sample_draft_tokens=None)

    def add(self, tag: ParticleTag, outputs: list[int]) -> str:
        request_id = particle_request_id(tag.group, tag.slot, tag.generation)
        params = SimpleNamespace(extra_args={EXTRA_ARGS_KEY: tag.to_dict()})
        self.requests[request_id] = SimpleNamespace(
            sampling_params=params, prompt_token_ids=[1] * tag.prompt_len, output_token_ids=list(outputs)
        )
        return request_id

    def batch(self, request_ids: list[str]) -> None:
        self.input_batch.req_ids, self.input_batch.num_reqs = list(request_ids), len(request_ids)


def _smc(runner: StandInRunner):
    from specplug.core.host import MethodSession
    from specplug.plugins.vllm_smc.smc_runner import SMCRunner

    smc = SMCRunner(runner, CONFIG, MethodSession("smc", engine="vllm"))
    smc.original_sample = lambda *a: pytest.fail("the plain sampler must not run for particle rows")
    return smc


def test_first_step_then_a_cycle_match_the_core_sampler() -> None:
    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

    gen = torch.Generator().manual_seed(0)
    runner = StandInRunner()
    smc = _smc(runner)
    slot0 = runner.add(_tag(0), [])
    runner.batch([slot0])
    prompt_logits = torch.randn(1, VOCAB, generator=gen)
    first = smc.sample(prompt_logits, None).sampled_token_ids
    (event,) = smc.events
    assert event.kind == "start" and not event.ended

    # The core on the same tensors: the same first tokens for every slot.
    sampler = SMCSampler(CONFIG, (VOCAB - 1,))
    state = sampler.start(1, 40, [17])
    expected_first = sampler.first_tokens(state, prompt_logits)
    assert int(first[0, 0]) == int(expected_first[0, 0])
    assert torch.equal(smc.group_state("g").tokens[..., : state.tokens.shape[-1]], state.tokens)

    # Slots 1, 2 join (forced tokens), then all three verify together.
    ids = [slot0] + [runner.add(_tag(s), []) for s in (1, 2)]
    runner.batch(ids[1:])
    smc.events.clear()
    forced = smc.sample(torch.randn(2, VOCAB, generator=gen), None).sampled_token_ids
    assert forced[:, 0].tolist() == expected_first[0, 1:].tolist()

    drafts = torch.randint(0, VOCAB - 1, (N, GAMMA), generator=gen)
    log_q = torch.log_softmax(torch.randn(N, GAMMA, VOCAB, generator=gen), -1).gather(-1, drafts.unsqueeze(-1))[..., 0]
    for slot, request_id in enumerate(ids):
        runner.requests[request_id].output_token_ids = [int(expected_first[0, slot])]
        smc.drafts[request_id] = (drafts[slot], log_q[slot])
    order = [2, 0, 1]  # vLLM's batch order is not slot order
    runner.batch([ids[s] for s in order])
    metadata = SpecDecodeMetadata.make_dummy([drafts[s].tolist() for s in order], torch.device("cpu"))
    target = torch.randn(N, GAMMA + 1, VOCAB, generator=gen)
    flat = torch.cat([target[s] for s in order])  # per row: γ target positions, then the bonus position
    out = smc.sample(flat, metadata).sampled_token_ids

    result = sampler.cycle(state, drafts.unsqueeze(0), log_q.unsqueeze(0), target.unsqueeze(0))
    for row, slot in enumerate(order):
        assert out[row].tolist() == result.tokens[0, slot].tolist()
    replica = smc.group_state("g") if "g" in smc.pool_of else None
    (event,) = smc.events
    assert event.kind == "cycle" and event.resampled == bool(result.plan.resampled[0])
    assert event.dst == result.plan.dst.tolist() and event.src == result.plan.src.tolist()
    assert abs(event.ess - float(result.ess[0]) / N) < 1e-12
    if replica is not None:
        assert torch.equal(replica.log_weights, state.log_weights)


def test_draft_log_q_is_the_tempered_log_probability_of_the_drawn_token() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, VOCAB, generator=gen) * 3
    runner = StandInRunner(draft_logits=logits)
    smc = _smc(runner)
    ids = [runner.add(_tag(s), [5]) for s in (0, 1)]
    runner.batch(ids)
    smc.add_group(_tag(0))
    drawn = []

    def propose(*_: object) -> torch.Tensor:
        tokens = [smc.sample_draft_tokens(torch.zeros(2, 4), None)[0] for _ in range(GAMMA)]
        drawn.append(torch.stack(tokens, dim=1))
        return drawn[-1]

    smc.original_propose = propose
    first = smc.propose()
    for row, request_id in enumerate(ids):
        tokens, log_q = smc.drafts[request_id]
        assert torch.equal(tokens, first[row])
        expected = torch.log_softmax(logits[row] / CONFIG.draft_temperature, -1)[tokens]
        assert torch.allclose(log_q, expected, atol=1e-6)
    # Keyed draws: the same rows in the other batch order draw the same tokens.
    runner.batch(ids[::-1])
    runner.drafter.model.compute_logits = lambda hidden: logits.flip(0)
    second = smc.propose()
    assert torch.equal(second.flip(0), first)


def test_a_group_whose_rows_break_lockstep_ends_with_an_error_event() -> None:
    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

    runner = StandInRunner()
    smc = _smc(runner)
    slot0 = runner.add(_tag(0), [])
    runner.batch([slot0])
    smc.sample(torch.randn(1, VOCAB), None)
    runner.requests[slot0].output_token_ids = [3]
    smc.drafts[slot0] = (torch.tensor([1, 2, 3]), torch.zeros(3))
    smc.events.clear()
    metadata = SpecDecodeMetadata.make_dummy([[1, 2, 3]], torch.device("cpu"))
    smc.sample(torch.randn(GAMMA + 1, VOCAB), metadata)  # slot 0 alone: slots 1 and 2 are live but absent
    (event,) = smc.events
    assert event.kind == "error" and "all live slots" in event.reason
    assert "g" not in smc.pool_of


def test_groups_of_one_batch_cycle_together_exactly_as_each_alone() -> None:
    """Pooled groups (equal settings share one state, one core call) decide exactly what each group decides alone.

    Three groups, two pools (temperatures 1.0 and 0.7), different seeds and budgets, rows interleaved in the
    batch; resampling at every ESS dip, a group that ends while the others go on. Checked every step against one
    core `SMCSampler` per group: tokens per row, ESS, fork plans, and the ended group's result.
    """
    import dataclasses

    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

    specs = {"a": (17, 40, 1.0), "b": (5, 9, 1.0), "c": (3, 40, 0.7)}  # group -> (seed, max tokens, temperature)
    tags = {
        g: [ParticleTag(g, s, 0, N, seed, mt, t, 5, 0, (VOCAB - 1,)) for s in range(N)]
        for g, (seed, mt, t) in specs.items()
    }
    core = {}
    for g, (seed, mt, t) in specs.items():
        sampler = SMCSampler(dataclasses.replace(CONFIG, target_temperature=t), (VOCAB - 1,))
        core[g] = (sampler, sampler.start(1, mt, [seed]))
    gen = torch.Generator().manual_seed(3)
    runner = StandInRunner()
    runner.discard_request_mask.np = np.zeros(64, dtype=bool)
    smc = _smc(runner)
    ids = {g: [runner.add(tag, []) for tag in tags[g]] for g in specs}

    runner.batch([ids[g][0] for g in specs])
    prompt_logits = torch.randn(len(specs), VOCAB, generator=gen)
    first = smc.sample(prompt_logits, None).sampled_token_ids
    assert len(smc.pools) == 2 and len(smc.pools[(N, 1.0, (VOCAB - 1,))]) == 2
    for i, (g, (sampler, state)) in enumerate(core.items()):
        expected = sampler.first_tokens(state, prompt_logits[i : i + 1])
        assert int(first[i, 0]) == int(expected[0, 0])
        for slot, request_id in enumerate(ids[g]):
            runner.requests[request_id].output_token_ids = [int(expected[0, slot])]

    ended = set()
    for step in range(4):
        rows = [(g, s) for g in specs if g not in ended for s in range(N) if not core[g][1].finished[0, s]]
        order = torch.randperm(len(rows), generator=gen).tolist()
        rows = [rows[i] for i in order]
        drafts = {r: torch.randint(0, VOCAB - 1, (GAMMA,), generator=gen) for r in rows}
        log_q = {r: -torch.rand(GAMMA, generator=gen) for r in rows}
        target = {r: torch.randn(GAMMA + 1, VOCAB, generator=gen) for r in rows}
        for g, s in rows:
            smc.drafts[ids[g][s]] = (drafts[(g, s)], log_q[(g, s)])
        runner.batch([ids[g][s] for g, s in rows])
        metadata = SpecDecodeMetadata.make_dummy([drafts[r].tolist() for r in rows], torch.device("cpu"))
        smc.events.clear()
        out = smc.sample(torch.cat([target[r] for r in rows]), metadata).sampled_token_ids
        events = {e.group: e for e in smc.events}
        for g in {g for g, _ in rows}:
            sampler, state = core[g]
            live = [s for s in range(N) if (g, s) in drafts]
            d = torch.zeros(1, N, GAMMA, dtype=torch.int64)
            q = torch.zeros(1, N, GAMMA)
            t = torch.zeros(1, N, GAMMA + 1, VOCAB)
            for s in live:
                d[0, s], q[0, s], t[0, s] = drafts[(g, s)], log_q[(g, s)], target[(g, s)]
            result = sampler.cycle(state, d, q, t)
            for s in live:
                assert out[rows.index((g, s))].tolist() == result.tokens[0, s].tolist(), (step, g, s)
            event = events[g]
            assert event.kind == "cycle" and abs(event.ess - float(result.ess[0]) / N) < 1e-12
            assert event.resampled == bool(result.plan.resampled[0])
            assert event.dst == result.plan.dst.tolist() and event.src == result.plan.src.tolist()
            if bool(state.group_finished[0]):
                final = sampler.finalize(state)
                assert event.chosen == int(final.chosen[0]) and event.tokens == final.tokens[0]
                ended.add(g)
                assert g not in smc.pool_of
            else:
                assert torch.equal(smc.group_state(g).log_weights, state.log_weights)
    assert "b" in ended and "c" not in ended  # b's 9-token budget ends it at its second cycle
