"""The bad-configuration battery (issue 21's first table row, measured again): many wrong `additional_config.specplug`
blocks, every method, each refused by the validator vLLM's front end runs before any engine process starts
(`settings.check_block`, also what `specplug doctor --config` runs) with one `ConfigError` line that names the
setting. No engine is started; the FIFO memory file that once hung the real server is run end to end in
test_vllm_startup_errors.py.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from specplug.core.errors import ConfigError
from specplug.plugins.vllm_smc.settings import check_block

VOCAB = 49152

# (method, setting, value): each a value a person could plausibly type and that must not reach a serving loop.
WRONG_VALUES = [
    *[("smc", "num_particles", v) for v in (0, -1, 1.5, "4", True, None, 10**9)],
    *[("smc", "gamma", v) for v in (0, -2, 2.5, "3")],
    *[("smc", "draft_temperature", v) for v in (0, -0.7, math.nan, math.inf, "0.7")],
    *[("smc", "target_temperature", v) for v in (-1.0, math.nan, "hot")],
    *[("smc", "resample_threshold", v) for v in (-0.1, 1.5, math.nan)],
    ("smc", "alpha", -1.0),
    ("smc", "resample_method", "bogus"),
    ("smc", "output_rule", "best"),
    *[("smc", "log_interval_s", v) for v in (-5, 0, "10", math.inf, True)],
    ("smc", "num_partciles", 4),  # a typo is not silently ignored
    *[("csd", "lam", v) for v in (-1, math.nan, "six")],
    *[("csd", "tau", v) for v in (-0.5, math.inf, 2.0)],
    *[("csd", "gamma", v) for v in (0, 3.5)],
    *[("csd", "max_pairs", v) for v in (0, -10, "many")],
    ("csd", "namespace", ""),
    ("csd", "online", "yes"),
    *[("csd", "save_interval_s", v) for v in (-1, math.nan, "often")],
    ("csd", "memory_path", 7),
    ("csd", "lamda", 6),
    *[("toolspec", "num_speculative_tokens", v) for v in (0, 1000, 2.5)],
    ("toolspec", "tool_format", "xml"),
    *[("toolspec", "match_min", v) for v in (0, 100)],
    ("toolspec", "recycling_top_k", 0),
    ("toolspec", "tree_width", 0),
    ("toolspec", "memory_max_tenants", 0),
    ("toolspec", "use_schema", "true"),
    ("toolspec", "retrieval", "bm25"),
    ("toolspec", "suffix_min_token_prob", 1.5),
    ("toolspec", "constrained_min_confidence", -0.1),
    ("toolspec", "save_path", ""),
    ("toolspec", "save_interval_s", -60),
    ("toolspec", "trust_claimed_tenant", 1),
    ("toolspec", "use_shema", True),
]


def _one_line_naming(error: ConfigError, setting: str) -> str:
    text = str(error)
    assert "\n" not in text, text
    assert setting in text, text
    return text


@pytest.mark.parametrize(("method", "setting", "value"), WRONG_VALUES, ids=lambda v: str(v)[:20])
def test_a_wrong_value_is_refused_in_one_line_naming_the_setting(method, setting, value) -> None:
    with pytest.raises(ConfigError) as caught:
        check_block({"method": method, setting: value}, vocab_size=VOCAB)
    _one_line_naming(caught.value, setting)


def test_files_that_cannot_serve_are_refused_before_the_engine(tmp_path: Path) -> None:
    """Memory and output files: a directory, a FIFO, a missing file, NaN in a memory, an unwritable place."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    nan_memory = tmp_path / "nan.json"
    nan_memory.write_text('{"kind": "csd-correction-memory", "lam": NaN}')
    cases = [
        ("csd", "memory_path", str(tmp_path / "missing.json")),
        ("csd", "memory_path", str(fifo)),
        ("csd", "memory_path", str(tmp_path)),
        ("csd", "memory_path", str(nan_memory)),
        ("csd", "save_path", str(tmp_path)),
        ("csd", "save_path", "/proc/specplug-battery/memory.json"),
        ("toolspec", "memory_path", str(fifo)),
        ("toolspec", "memory_path", str(tmp_path / "missing.json")),
        ("toolspec", "save_path", str(tmp_path)),
        ("smc", "trace_path", str(tmp_path)),
    ]
    for method, setting, value in cases:
        with pytest.raises(ConfigError) as caught:
            check_block({"method": method, setting: value}, vocab_size=VOCAB)
        _one_line_naming(caught.value, setting)


@pytest.mark.parametrize("block", [None, [], "smc", {"method": 3}, {"lam": 6}, {"method": "warp-drive"}])
def test_a_block_that_names_no_method_is_refused(block) -> None:
    with pytest.raises(ConfigError) as caught:
        check_block(block)
    assert "\n" not in str(caught.value) and "method" in str(caught.value)
