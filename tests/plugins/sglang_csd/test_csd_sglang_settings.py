"""Where CSD's SGLang settings come from (SPECPLUG_CSD_CONFIG) and what is refused. Engine-free."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from specplug.core.errors import ConfigError
from specplug.plugins.sglang_csd.settings import (
    CONFIG_ENV,
    DEFAULT_NUM_DRAFT_TOKENS,
    check_server_args,
    default_num_draft_tokens,
    load_settings,
)


def test_unset_means_the_papers_defaults() -> None:
    settings = load_settings({})
    assert (settings.config.lam, settings.config.tau, settings.source) == (6, 0.01, "defaults")
    assert default_num_draft_tokens(settings) == DEFAULT_NUM_DRAFT_TOKENS


def test_json_file_toml_file_and_inline_json(tmp_path: Path) -> None:
    (tmp_path / "csd.json").write_text(json.dumps({"lam": "inf", "tau": 0.05, "save_interval_s": 30}))
    (tmp_path / "csd.toml").write_text('lam = 4\nnamespace = "code"\nmemory_path = "/m.json"\n')
    from_json = load_settings({CONFIG_ENV: str(tmp_path / "csd.json")})
    assert from_json.config.lam == math.inf and from_json.config.tau == 0.05 and from_json.save_interval_s == 30
    from_toml = load_settings({CONFIG_ENV: str(tmp_path / "csd.toml")})
    assert (from_toml.config.lam, from_toml.config.namespace, from_toml.config.memory_path) == (4, "code", "/m.json")
    inline = load_settings({CONFIG_ENV: '{"gamma": 5}'})
    assert inline.explicit == {"gamma"} and default_num_draft_tokens(inline) == 6


@pytest.mark.parametrize(
    ("text", "suffix", "match"),
    [
        ('{"tau": 0}', ".json", "tau"),
        ('{"lam": 2.5}', ".json", "lam"),
        ('{"lamda": 6}', ".json", "lamda"),  # a typo is refused, never ignored
        ('{"save_interval_s": -1}', ".json", "save_interval_s"),
        ('{"tau": ', ".json", "valid JSON"),
        ("tau = [", ".toml", "valid TOML"),
        ("[1, 2]", ".json", "object"),
    ],
)
def test_bad_settings_name_the_problem(tmp_path: Path, text: str, suffix: str, match: str) -> None:
    path = tmp_path / f"csd{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings({CONFIG_ENV: str(path)})


def test_missing_file_and_bad_inline_json_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable"):
        load_settings({CONFIG_ENV: str(tmp_path / "nope.json")})
    with pytest.raises(ConfigError, match="JSON object"):
        load_settings({CONFIG_ENV: "{tau: 1}"})


def test_server_args_checks() -> None:
    gamma5 = load_settings({CONFIG_ENV: '{"gamma": 5}'})
    args = SimpleNamespace(speculative_num_draft_tokens=6, speculative_use_rejection_sampling=False, dp_size=1)
    check_server_args(args, gamma5)
    with pytest.raises(ConfigError, match="gamma"):
        check_server_args(args, gamma5, num_draft_tokens=12)
    check_server_args(args, load_settings({}), num_draft_tokens=12)  # γ not written: the flag decides
    with pytest.raises(ConfigError, match="num-draft-tokens"):
        check_server_args(SimpleNamespace(speculative_num_draft_tokens=1), load_settings({}))
    saving = load_settings({CONFIG_ENV: '{"save_path": "/tmp/m.json"}'})
    with pytest.raises(ConfigError, match="dp-size"):
        check_server_args(SimpleNamespace(speculative_num_draft_tokens=None, dp_size=2), saving)
