"""The pluggy contract: discovery through installed entry points, typo detection, selectors, wrappers."""

from __future__ import annotations

from importlib import metadata
from types import SimpleNamespace

import pluggy
import pytest

from specplug.core.errors import UnknownMethodError
from specplug.core.hookspecs import hookimpl
from specplug.core.plugin_manager import create_plugin_manager, get_plugin_manager, reset_plugin_manager

PLUGINS = {"vllm_smc", "sglang_csd", "trtllm_toolspec"}


def test_every_plugin_is_declared_by_the_installed_distribution() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group="specplug")}
    assert set(eps) >= PLUGINS
    for name in PLUGINS:
        assert eps[name].dist is not None and eps[name].dist.name == "specplug"
        assert eps[name].value == f"specplug.plugins.{name}.plugin"


# The core's own plugins: standard pieces, then one per method (metrics describe no methods).
CORE = {"core", "smc", "csd", "toolspec"}


def test_engine_bootstraps_are_declared_in_the_engines_groups() -> None:
    vllm = {ep.name: ep.value for ep in metadata.entry_points(group="vllm.general_plugins")}
    sglang = {ep.name: ep.value for ep in metadata.entry_points(group="sglang.srt.plugins")}
    assert vllm.get("specplug") == "specplug.plugins.vllm_smc.bootstrap:register"
    assert sglang.get("specplug") == "specplug.plugins.sglang_csd.bootstrap:register"


def test_plugin_manager_discovers_every_plugin_from_entry_points() -> None:
    pm = create_plugin_manager(strict=True)
    assert set(pm.load_report.loaded) == PLUGINS
    assert pm.load_report.failed == {}
    infos = {info.name: info for info in pm.plugin_infos()}
    assert set(infos) == PLUGINS | CORE
    assert {infos[p].engine for p in PLUGINS} == {"vllm", "sglang", "trtllm"}


def test_without_entry_points_only_the_core_is_registered() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    assert sorted(info.name for info in pm.plugin_infos()) == sorted(CORE)


class _Misspelled:
    @hookimpl
    def specplug_make_proposr(self, method, config):  # typo on purpose
        return None


def test_misspelled_hook_is_rejected_and_reported() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    assert pm.register_checked(_Misspelled(), name="typo") is False
    assert "typo" in pm.load_report.failed and "specplug_make_proposr" in pm.load_report.failed["typo"]
    assert pm.get_plugin("typo") is None
    with pytest.raises(pluggy.PluginValidationError):
        pm.register_checked(_Misspelled(), name="typo2", strict=True)


def test_a_broken_entry_point_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = metadata.EntryPoint(name="broken", value="specplug_no_such_module.plugin", group="specplug")
    real = metadata.entry_points

    def fake(**kw):
        found = list(real(**kw))
        return [*found, broken] if kw.get("group") == "specplug" else found

    monkeypatch.setattr(metadata, "entry_points", fake)
    pm = create_plugin_manager()
    assert "broken" in pm.load_report.failed and "ModuleNotFoundError" in pm.load_report.failed["broken"]
    assert set(pm.load_report.loaded) >= PLUGINS
    with pytest.raises(ModuleNotFoundError):
        create_plugin_manager(strict=True)


class _Toy:
    @hookimpl
    def specplug_make_verifier(self, method, config):
        return SimpleNamespace(kind="toy", config=config) if method == "toy" else None


def test_selector_returns_first_answer_and_unknown_method_errors_clearly() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    pm.register_checked(_Toy(), name="toy", strict=True)
    assert pm.make_verifier("toy", {"a": 1}).config == {"a": 1}
    with pytest.raises(UnknownMethodError, match="no plugin provides verifier 'nope'"):
        pm.make_verifier("nope")


class _Timer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl(wrapper=True)
    def specplug_propose(self, proposer, contexts, options):
        self.calls.append("before")
        result = yield
        self.calls.append(f"after:{result}")
        return result


def test_wrappers_run_around_the_core_call() -> None:
    pm = create_plugin_manager(load_entry_points=False)
    timer = _Timer()
    pm.register_checked(timer, name="timer", strict=True)

    class Proposer:
        def propose(self, contexts, **options):
            return f"draft{len(contexts)}{options['k']}"

    out = pm.hook.specplug_propose(proposer=Proposer(), contexts=[[1], [2]], options={"k": 3})
    assert out == "draft23"
    assert timer.calls == ["before", "after:draft23"]


def test_shared_manager_is_built_once() -> None:
    reset_plugin_manager()
    try:
        assert get_plugin_manager() is get_plugin_manager()
    finally:
        reset_plugin_manager()


def test_core_provides_the_standard_methods_with_validated_settings() -> None:
    from specplug.core.errors import ConfigError

    pm = create_plugin_manager(load_entry_points=False)
    assert {m.name for m in pm.methods("verifier")} == {"greedy", "greedy_tree", "rejection", "csd", "csd_tree"}
    assert {m.name for m in pm.methods("proposer")} == {"ngram", "draft_model", "toolspec"}
    assert pm.make_proposer("ngram", {"num_speculative_tokens": 3}).k == 3
    assert pm.make_verifier("rejection", {"temperature": 0.5}).temperature == 0.5
    with pytest.raises(ConfigError, match="num_speculative_tokenz"):
        pm.make_proposer("ngram", {"num_speculative_tokenz": 3})
    with pytest.raises(ConfigError, match="prompt_lookup_max=1"):
        pm.make_proposer("ngram", {"prompt_lookup_min": 2, "prompt_lookup_max": 1})
    with pytest.raises(ConfigError, match="model=None"):
        pm.make_proposer("draft_model", {})
    csd = pm.make_verifier("csd", {"lam": 3, "namespace": "t1", "online": False})
    assert csd.config.lam == 3 and csd.update_memory is False
    with pytest.raises(ConfigError, match="tau=2"):
        pm.make_verifier("csd_tree", {"tau": 2})
