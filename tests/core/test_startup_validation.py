"""Startup checks that need no engine (issue 21, part 4): the nine bad settings that used to pass the validators are
refused with one `ConfigError` line naming the setting (and, for memory files, the file).

Each case runs against the validator a host's front end calls before the engine starts
(`plugins.vllm_smc.settings.check_block`, the same code `specplug doctor --config` runs) and, where the check is
in `core`, against the core function too. Pure Python: no engine is started.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from specplug.core.csd.bank import CorrectionMemoryBank
from specplug.core.errors import ConfigError
from specplug.core.persist import DataFileError, check_output_file, read_data_file, write_data_file
from specplug.core.startup import check_settings
from specplug.core.toolspec.memory import InvocationMemoryBank
from specplug.plugins.vllm_smc.settings import check_block, check_engine_args, tool_flags_warning

VOCAB = 49152  # SmolLM2's vocabulary
UNWRITABLE = "/proc/specplug-startup-check/memory.json"  # /proc refuses new files, even to root


def _csd_memory(path: Path, pairs: list[tuple[int, int]]) -> Path:
    bank = CorrectionMemoryBank(1000)
    memory = bank.memory("default")
    draft, target = zip(*pairs, strict=True)
    memory.observe(torch.tensor(draft), torch.tensor(target))
    bank.save(path)
    return path


def _toolspec_memory(path: Path, answers: list[list[int]]) -> Path:
    bank = InvocationMemoryBank()
    for answer in answers:
        bank.add("alice", answer)
    bank.save(path)
    return path


def _fail(block: dict, **facts) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        check_block(block, **facts)
    message = str(caught.value)
    assert "\n" not in message  # one line
    return caught.value


# --- 1. trace_path a directory -------------------------------------------------------------------------------------


def test_trace_path_directory_is_refused(tmp_path: Path) -> None:
    error = _fail({"method": "smc", "trace_path": str(tmp_path)})
    assert error.setting == "trace_path" and "directory" in str(error)


def test_trace_path_in_a_missing_folder_is_refused(tmp_path: Path) -> None:
    error = _fail({"method": "smc", "trace_path": str(tmp_path / "no" / "trace.jsonl")})
    assert error.setting == "trace_path"


# --- 2./3. log_interval_s of the wrong type, or negative -----------------------------------------------------------


@pytest.mark.parametrize("value", ["10", True, None, [1], float("nan"), float("inf")])
def test_log_interval_of_the_wrong_type_is_refused(value) -> None:
    error = _fail({"method": "smc", "log_interval_s": value})
    assert error.setting == "log_interval_s" and "seconds" in str(error)


@pytest.mark.parametrize("value", [-1, -0.5, 0])
def test_log_interval_not_positive_is_refused(value) -> None:
    assert _fail({"method": "smc", "log_interval_s": value}).setting == "log_interval_s"


def test_good_smc_adapter_settings_pass(tmp_path: Path) -> None:
    assert check_block({"method": "smc", "trace_path": str(tmp_path / "t.jsonl"), "log_interval_s": 2}) == "smc"


# --- 4. a memory file with NaN in it -------------------------------------------------------------------------------


def _with_nan(path: Path) -> Path:
    text = path.read_text()
    document = json.loads(text)
    document["payload"]["metadata"] = {"score": "NAN_HERE"}
    path.write_text(json.dumps(document).replace('"NAN_HERE"', "NaN"))
    return path


def test_memory_file_with_nan_is_refused_naming_setting_and_file(tmp_path: Path) -> None:
    path = _with_nan(_csd_memory(tmp_path / "m.json", [(1, 2)]))
    with pytest.raises(DataFileError, match="NaN"):  # core: a DataFileError with the reason, not a bare ValueError
        read_data_file(path, "csd-correction-memory", [1])
    error = _fail({"method": "csd", "memory_path": str(path)})
    assert error.setting == "memory_path" and str(path) in str(error) and "NaN" in str(error)


def test_toolspec_memory_file_with_nan_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    _toolspec_memory(path, [[1, 2, 3, 4]])
    document = json.loads(path.read_text())
    document["payload"]["match_min"] = "X"
    path.write_text(json.dumps(document).replace('"X"', "Infinity"))
    error = _fail({"method": "toolspec", "memory_path": str(path)})
    assert error.setting == "memory_path" and str(path) in str(error) and "Infinity" in str(error)


# --- 5. a memory file that is a FIFO ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["csd", "toolspec"])
def test_memory_fifo_is_refused_without_blocking(tmp_path: Path, method: str) -> None:
    fifo = tmp_path / "m.json"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            check_block({"method": method, "memory_path": str(fifo)})
            outcome.append(None)
        except BaseException as exc:  # recorded for the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the hung open/read so the test process can exit, then fail
        with open(fifo, "wb"):
            pass
        worker.join(5)
        pytest.fail("checking a FIFO memory_path blocked (it must be refused before it is opened)")
    (error,) = outcome
    assert isinstance(error, ConfigError) and error.setting == "memory_path"
    assert str(fifo) in str(error) and "not a regular file" in str(error) and "FIFO" in str(error)


def test_memory_directory_is_refused(tmp_path: Path) -> None:
    error = _fail({"method": "csd", "memory_path": str(tmp_path)})
    assert error.setting == "memory_path" and "directory" in str(error)


# --- 6./7. save_path unwritable, or a directory --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["csd", "toolspec"])
def test_unwritable_save_path_is_refused(method: str) -> None:
    error = _fail({"method": method, "save_path": UNWRITABLE})
    assert error.setting == "save_path" and UNWRITABLE in str(error)


def test_save_path_in_a_folder_that_refuses_new_files_is_refused() -> None:
    """/proc exists, is a folder and passes permission bits for root; creating a file there still fails."""
    with pytest.raises(ConfigError, match="writable folder"):
        check_output_file("save_path", "/proc/specplug-memory.json", method="csd")


@pytest.mark.parametrize("method", ["csd", "toolspec"])
def test_save_path_directory_is_refused(tmp_path: Path, method: str) -> None:
    error = _fail({"method": method, "save_path": str(tmp_path)})
    assert error.setting == "save_path" and "directory" in str(error)


def test_save_path_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    assert _fail({"method": "csd", "save_path": str(fifo)}).setting == "save_path"


def test_good_save_path_passes_and_leaves_no_probe(tmp_path: Path) -> None:
    check_block({"method": "csd", "save_path": str(tmp_path / "m.json")})
    assert list(tmp_path.iterdir()) == []


# --- 8. draft model path missing -----------------------------------------------------------------------------------


class _EngineArgs:
    def __init__(self, additional_config=None, speculative_config=None) -> None:
        self.additional_config, self.speculative_config = additional_config, speculative_config


def test_missing_draft_model_path_is_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-draft")
    args = _EngineArgs(
        {"specplug": {"method": "smc"}}, {"method": "draft_model", "model": missing, "num_speculative_tokens": 4}
    )
    with pytest.raises(ConfigError) as caught:
        check_engine_args(args)
    assert caught.value.setting == "speculative_config.model" and missing in str(caught.value)


def test_draft_model_checks_leave_hub_ids_and_plain_vllm_alone(tmp_path: Path) -> None:
    check_engine_args(_EngineArgs({"specplug": {"method": "smc"}}, {"method": "draft_model", "model": "org/draft"}))
    check_engine_args(_EngineArgs(None, {"method": "draft_model", "model": str(tmp_path / "missing")}))  # not ours
    check_engine_args(
        _EngineArgs({"specplug": {"method": "smc"}}, {"method": "draft_model", "model": str(tmp_path)})
    )  # exists


def test_malformed_block_refused_before_vllm_builds_its_config() -> None:
    args = _EngineArgs({"specplug": "csd"}, {"model": "specplug.ToolSpec"})
    with pytest.raises(ConfigError, match=r"additional_config\.specplug"):
        check_engine_args(args)


# --- 9. memory files re-signed with out-of-vocabulary token ids ----------------------------------------------------


def test_csd_memory_with_out_of_vocabulary_ids_is_refused(tmp_path: Path) -> None:
    path = _csd_memory(tmp_path / "m.json", [(5, 7), (VOCAB + 10, 3)])  # written and signed: a valid checksum
    CorrectionMemoryBank.load(path)  # whole and well-formed: only the vocabulary shows it is wrong
    with pytest.raises(DataFileError, match="vocabulary"):
        CorrectionMemoryBank.load(path, vocab_size=VOCAB)
    error = _fail({"method": "csd", "memory_path": str(path)}, vocab_size=VOCAB)
    assert error.setting == "memory_path" and str(path) in str(error) and str(VOCAB + 10) in str(error)
    check_block({"method": "csd", "memory_path": str(path)}, vocab_size=VOCAB + 100)  # a larger vocabulary: fine


def test_toolspec_memory_with_out_of_vocabulary_ids_is_refused(tmp_path: Path) -> None:
    path = _toolspec_memory(tmp_path / "t.json", [[1, 2, 3, VOCAB + 1, 4]])
    error = _fail({"method": "toolspec", "memory_path": str(path)}, vocab_size=VOCAB)
    assert error.setting == "memory_path" and str(path) in str(error) and str(VOCAB + 1) in str(error)
    check_block({"method": "toolspec", "memory_path": str(path)}, vocab_size=VOCAB + 2)


def test_resigned_payload_is_checked_not_trusted(tmp_path: Path) -> None:
    """A file re-signed by hand (edited payload, recomputed checksum) passes the checksum; the ids still do not."""
    path = _csd_memory(tmp_path / "m.json", [(5, 7)])
    _, payload = read_data_file(path, "csd-correction-memory", [1])
    payload["namespaces"]["default"]["target"] = [VOCAB]
    write_data_file(path, "csd-correction-memory", 1, payload)
    assert _fail({"method": "csd", "memory_path": str(path)}, vocab_size=VOCAB).setting == "memory_path"


# --- the rest of the block -----------------------------------------------------------------------------------------


def test_good_blocks_pass(tmp_path: Path) -> None:
    csd = _csd_memory(tmp_path / "m.json", [(5, 7)])
    assert check_block({"method": "csd", "memory_path": str(csd), "lam": 3}, vocab_size=VOCAB) == "csd"
    tool = _toolspec_memory(tmp_path / "t.json", [[1, 2, 3]])
    assert check_block({"method": "toolspec", "memory_path": str(tool)}, num_speculative_tokens=8) == "toolspec"
    assert check_block({"method": "smc", "num_particles": 8}) == "smc"


def test_other_bad_values_still_refused() -> None:
    assert _fail({"method": "csd", "lam": 0}).setting == "lam"
    assert _fail({"method": "csd", "gamma": 4}, num_speculative_tokens=6).setting == "gamma"
    assert _fail({"method": "toolspec", "num_speculative_tokens": 3}, num_speculative_tokens=8).setting == (
        "num_speculative_tokens"
    )
    assert _fail({"method": "smc", "num_particles": 0}).setting == "num_particles"
    assert _fail({"method": "csd", "typo": 1}).setting == "typo"
    assert _fail({"method": "no-such-method"}).setting == "method"
    assert _fail({"lam": 3}).setting == "additional_config.specplug"


def test_core_check_settings_is_the_same_check(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="save_path"):
        check_settings("csd", {"save_path": str(tmp_path)})
    assert check_settings("csd", {"lam": 4}).lam == 4


# --- part 5: the ToolSpec tool-flags warning -----------------------------------------------------------------------


class _ServerArgs:
    def __init__(self, auto: bool, parser: str | None) -> None:
        self.enable_auto_tool_choice, self.tool_call_parser = auto, parser


@pytest.mark.parametrize(
    ("engine_args", "server_args", "warned"),
    [
        (_EngineArgs({"specplug": {"method": "toolspec"}}), _ServerArgs(False, None), True),
        (_EngineArgs(None, {"model": "specplug.ToolSpec"}), _ServerArgs(False, None), True),
        (_EngineArgs(None, {"model": "specplug.ToolSpec"}), _ServerArgs(True, None), True),
        (_EngineArgs(None, {"model": "specplug.ToolSpec"}), _ServerArgs(True, "hermes"), False),
        (_EngineArgs({"specplug": {"method": "csd"}}), _ServerArgs(False, None), False),
        (_EngineArgs(None, {"model": "specplug.ToolSpec"}), object(), False),  # not the OpenAI server's arguments
    ],
)
def test_toolspec_without_tool_flags_warns(engine_args, server_args, warned: bool) -> None:
    warning = tool_flags_warning(server_args, engine_args)
    assert (warning is not None) == warned
    if warned:
        assert "--enable-auto-tool-choice --tool-call-parser" in warning and "HTTP 400" in warning
        assert "\n" not in warning
