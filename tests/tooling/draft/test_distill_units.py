"""`specplug draft distill`'s pieces on a tiny random Llama (no assets, no engine): the draft's initialisation, the
objectives against their exact definitions, training that lowers the loss, an interrupted run that resumes to the
same weights as an uninterrupted one, and the atomic install."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from specplug.draft import samples, store, train

transformers = pytest.importorskip("transformers")


def tiny_shards(target, folder: Path, *, n_prompts: int = 12, batch: int = 4) -> list[Path]:
    g = torch.Generator().manual_seed(1)
    prompts = [
        samples.TrainingPrompt(
            f"p{i}", torch.randint(3, 48, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        )
        for i in range(n_prompts)
    ]
    return samples.sample_all(
        target,
        prompts,
        folder,
        batch=batch,
        max_new_tokens=10,
        top_k=8,
        eos_ids=[2],
        pad_id=0,
        seed=0,
        progress=lambda m: None,
        label="test",
    )


def test_draft_starts_as_the_chosen_target_layers_with_the_head_frozen(tiny_llama) -> None:
    target = tiny_llama()
    draft = train.make_draft(target, (0, 3))
    assert draft.config.num_hidden_layers == 2
    t, d = target.state_dict(), draft.state_dict()
    for name in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
        assert torch.equal(d[f"model.layers.0.{name}"], t[f"model.layers.0.{name}"])
        assert torch.equal(d[f"model.layers.1.{name}"], t[f"model.layers.3.{name}"])
    trainable = {n for n, p in draft.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.") for n in trainable)
    whole = train.make_draft(target, range(4))  # every layer in order: the target itself
    ids = torch.randint(0, 48, (1, 7))
    assert torch.allclose(whole(ids).logits, target(ids).logits, atol=1e-6)
    with pytest.raises(ValueError, match=r"within 0\.\.3"):
        train.make_draft(target, (0, 4))


@pytest.mark.parametrize("objective", train.OBJECTIVES)
def test_bucket_divergence_is_the_exact_divergence_when_the_buckets_are_the_vocabulary(objective: str) -> None:
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(5, 10, generator=g) * 2, -1)
    logq = torch.log_softmax(torch.randn(5, 10, generator=g) * 2, -1)
    top_logp, top_ids = logp.topk(10, -1)  # K = V: nothing in the rest bucket
    got = train.bucket_divergence(logq, top_ids, top_logp, objective)
    p = logp.exp()
    exact = (p * (logp - logq)).sum(-1) if objective == "kl" else torch.log((p * p / logq.exp()).sum(-1))
    assert torch.allclose(got, exact, atol=1e-5)
    same = train.bucket_divergence(logp, top_ids, top_logp, objective)
    assert torch.allclose(same, torch.zeros(5), atol=1e-5)  # KL(p‖p) = 0 and log Σ p²/p = 0


def test_bucket_divergence_with_a_rest_bucket_is_the_divergence_of_the_coarsened_laws() -> None:
    g = torch.Generator().manual_seed(1)
    logp = torch.log_softmax(torch.randn(3, 12, generator=g), -1)
    logq = torch.log_softmax(torch.randn(3, 12, generator=g), -1)
    top_logp, top_ids = logp.topk(4, -1)
    got = train.bucket_divergence(logq, top_ids, top_logp, "kl")
    p, q = logp.exp(), logq.exp()
    rest = torch.ones_like(p, dtype=torch.bool).scatter(-1, top_ids, False)
    pb = torch.cat([p.gather(-1, top_ids), (p * rest).sum(-1, keepdim=True)], -1)
    qb = torch.cat([q.gather(-1, top_ids), (q * rest).sum(-1, keepdim=True)], -1)
    assert torch.allclose(got, (pb * (pb.log() - qb.log())).sum(-1), atol=1e-5)


def test_sampled_shards_hold_answers_after_the_prompt_and_the_targets_law_there(tiny_llama, tmp_path: Path) -> None:
    target = tiny_llama()
    paths = tiny_shards(target, tmp_path)
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    shard = samples.load_shard(paths[0])
    rows, cols, steps = train.answer_positions(shard)
    assert len(rows) == int((shard.length - shard.start).sum()) > 0
    with torch.no_grad():  # the stored teacher is the target's own log-softmax at the position before each answer token
        logits = train.shard_logits(target, shard, rows, cols)
    expected = torch.log_softmax(logits, -1).gather(-1, shard.top_ids[rows, steps])
    assert torch.allclose(expected, shard.top_logp[rows, steps], atol=1e-4)
    again = tiny_shards(target, tmp_path)  # a rerun finds every shard on disk and samples nothing
    assert [p.stat().st_mtime_ns for p in again] == [p.stat().st_mtime_ns for p in paths]


def _run(target, shards, folder: Path, *, interrupt_at: int | None = None, epochs: int = 3):
    draft = train.make_draft(target, (0, 3))
    settings = train.TrainSettings(objective="kl", epochs=epochs, lr=3e-3, seed=0, checkpoint_every_s=0.0)

    def progress(message: str) -> None:
        if interrupt_at is not None and f"step {interrupt_at}/" in message:
            raise KeyboardInterrupt

    return draft, train.train(draft, shards, settings, folder, progress)


def test_training_lowers_the_heldout_divergence(tiny_llama, tmp_path: Path) -> None:
    target = tiny_llama()
    shards = tiny_shards(target, tmp_path / "s", n_prompts=16)
    before = train.make_draft(target, (0, 3))
    draft, meta = _run(target, shards[:3], tmp_path / "t", epochs=6)
    assert meta["optimizer_steps"] == 18
    figures = train.heldout_figures(target, {"before": before, "after": draft}, shards[3:])
    assert figures["after"]["kl"] < 0.8 * figures["before"]["kl"]
    assert figures["after"]["acceptance"] > figures["before"]["acceptance"]


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tiny_llama, tmp_path: Path) -> None:
    target = tiny_llama()
    shards = tiny_shards(target, tmp_path / "s")
    whole, _ = _run(target, shards, tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _run(target, shards, tmp_path / "b", interrupt_at=5)
    assert json.loads((tmp_path / "b" / "train-state.json").read_text())["optimizer_steps"] == 5
    resumed, meta = _run(target, shards, tmp_path / "b")
    assert meta["optimizer_steps"] == 9
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_damaged_training_state_is_not_resumed(tiny_llama, tmp_path: Path) -> None:
    target = tiny_llama()
    shards = tiny_shards(target, tmp_path / "s")
    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _run(target, shards, tmp_path / "b", interrupt_at=5)
    state = tmp_path / "b" / "train-state.safetensors"
    state.write_bytes(state.read_bytes()[:-8] + b"\0" * 8)
    draft = train.make_draft(target, (0, 3))
    optimizer = torch.optim.AdamW([p for p in draft.parameters() if p.requires_grad])
    assert train._load_state(tmp_path / "b", draft, optimizer) is None


def test_install_is_atomic_and_a_replacement_happens_only_after_success(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPECPLUG_CACHE_DIR", str(tmp_path))

    def build(text: str):
        def write(out: Path) -> dict:
            (out / "config.json").write_text("{}")
            (out / store.PROVENANCE).write_text(json.dumps({"layers": [0], "text": text}))
            return {"kind": "draft"}

        return write

    def broken(out: Path) -> dict:
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        store.install_draft("d", broken, replace=False, progress=lambda m: None)
    assert store.find_draft("d") is None and not (tmp_path / "drafts" / "d").exists()
    path = store.install_draft("d", build("one"), replace=False, progress=lambda m: None)
    assert store.find_draft("d") == path
    with pytest.raises(FileExistsError):
        store.install_draft("d", build("two"), replace=False, progress=lambda m: None)
    with pytest.raises(RuntimeError):
        store.install_draft("d", broken, replace=True, progress=lambda m: None)
    assert json.loads((path / store.PROVENANCE).read_text())["text"] == "one"  # the old draft survives a failed retrain
    store.install_draft("d", build("two"), replace=True, progress=lambda m: None)
    assert json.loads((path / store.PROVENANCE).read_text())["text"] == "two"
    assert [name for name, _ in store.list_drafts()] == ["d"]
    (path / store.PROVENANCE).write_text("{}")  # damaged after the fact: refused by name, never served
    from specplug.assets.cache import ChecksumError

    with pytest.raises(ChecksumError, match="distill it again"):
        store.find_draft("d")


def test_a_draft_is_found_by_name_where_a_model_name_is_expected(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPECPLUG_CACHE_DIR", str(tmp_path))
    from specplug.assets import resolve_model
    from specplug.assets.cache import UnknownAssetError

    def write(out: Path) -> dict:
        (out / "config.json").write_text("{}")
        (out / store.PROVENANCE).write_text("{}")
        return {}

    path = store.install_draft("mine", write, replace=False, progress=lambda m: None)
    assert resolve_model("mine") == path
    with pytest.raises(UnknownAssetError, match="distilled draft"):
        resolve_model("not-a-draft")


def test_vllm_teacher_answers_make_the_same_shard_layout_as_transformers() -> None:
    """The vLLM sampler's shard (built from token ids and ranked log-prob pairs) trains exactly like a transformers
    one: right-padded tokens, answers from `start`, the teacher per answer position, missing top-K entries given
    zero probability without NaNs in the loss."""
    from specplug.draft.teacher_vllm import PAD_LOGP, shard_from_answers

    prompts, answers = [[5, 6, 7], [8, 9]], [[10, 2], [11, 12, 13]]
    top = [
        [[(10, -0.1), (3, -2.5)], [(2, -0.2), (4, -1.8)]],
        [[(11, -0.3), (4, -1.4)], [(12, -0.05)], [(13, -0.7), (6, -0.9)]],  # one position has fewer than K
    ]
    shard = shard_from_answers(prompts, answers, top, k=2)
    assert shard.tokens.tolist() == [[5, 6, 7, 10, 2], [8, 9, 11, 12, 13]]
    assert shard.start.tolist() == [3, 2] and shard.length.tolist() == [5, 5]
    assert shard.top_ids[1, 1].tolist() == [12, 0] and shard.top_logp[1, 1, 1].item() == PAD_LOGP
    rows, cols, steps = train.answer_positions(shard)
    assert cols.tolist() == [2, 3, 1, 2, 3] and steps.tolist() == [0, 1, 0, 1, 2]
    logq = torch.log_softmax(torch.randn(len(rows), 16), -1)
    for objective in train.OBJECTIVES:
        div = train.bucket_divergence(logq, shard.top_ids[rows, steps], shard.top_logp[rows, steps], objective)
        assert torch.isfinite(div).all()


def test_worker_loops_resolve_by_module_path() -> None:
    from specplug.bench.vllm_worker import _loop
    from specplug.draft.teacher_vllm import LOOP, teacher_loop

    assert _loop(LOOP) is teacher_loop
    assert _loop("bench").__name__ == "bench_loop"
