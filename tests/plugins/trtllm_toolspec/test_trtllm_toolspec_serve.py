"""The launcher (`python -m specplug.plugins.trtllm_toolspec.serve`): argument checks, and its wiring into the
stand-in `tensorrt_llm.LLM` and `OpenAIServer` (fake_trtllm.py). The real server is unverified (no GPU here)."""

from __future__ import annotations

import json

import pytest

from specplug.plugins.trtllm_toolspec import serve

from .cases import TOOLS
from .fake_trtllm import FakeLLM, FakeOpenAIServer, UserProvidedDecodingConfig


@pytest.fixture
def tools_file(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(TOOLS))
    return str(path)


def test_arguments_are_parsed_and_validated(tools_file, tmp_path):
    settings_file = tmp_path / "toolspec.json"
    settings_file.write_text('{"num_speculative_tokens": 4}')
    args = serve.parse_args(
        ["MODEL", "--tools", tools_file, "--toolspec-config", str(settings_file), "--llm-args", '{"max_batch_size": 8}']
    )
    assert (args.model, args.tools, args.settings, args.llm_kwargs) == (
        "MODEL",
        TOOLS,
        {"num_speculative_tokens": 4},
        {"max_batch_size": 8},
    )
    assert (args.host, args.port, args.tenant) == ("localhost", 8000, "default")

    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"tools": TOOLS}))
    assert serve.parse_args(["MODEL", "--tools", str(wrapped), "--toolspec-config", "{}"]).tools == TOOLS
    assert serve.parse_args(["MODEL"]).tools is None  # retrieval and recycling only


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: model"),
        (["M", "--tools", "/nonexistent/tools.json"], "--tools: cannot read"),
        (["M", "--tools", "@bad-json"], "not valid JSON"),
        (["M", "--tools", "@object"], "list of OpenAI tool objects"),
        (["M", "--tools", "@empty"], "holds no tools"),
        (["M", "--toolspec-config", '{"num_speculative_token": 4}'], "invalid setting num_speculative_token"),
        (["M", "--toolspec-config", '{"num_speculative_tokens": 999}'], "[1, 256]"),
        (["M", "--toolspec-config", "{oops"], "not valid JSON"),
        (["M", "--toolspec-config", "nowhere.json"], "neither a JSON object nor a readable file"),
        (["M", "--llm-args", "[1]"], "expected a JSON object"),
        (["M", "--llm-args", '{"speculative_config": {}}'], "speculative_config is set by the launcher"),
        (["M", "--port", "0"], "not a TCP port"),
        (["M", "--port", "http"], "invalid int value"),
        (["M", "--max-concurrency", "0"], "must be a positive integer"),
        (["M", "--tenant", ""], "--tenant: must not be empty"),
    ],
)
def test_bad_input_exits_with_status_2_and_says_why(argv, message, tmp_path, capsys):
    files = {"@bad-json": "{not json", "@object": '{"type": "function"}', "@empty": "[]"}
    for index, arg in enumerate(argv):
        if arg in files:
            path = tmp_path / f"{arg[1:]}.json"
            path.write_text(files[arg])
            argv = [*argv[:index], str(path), *argv[index + 1 :]]
    with pytest.raises(SystemExit) as exited:
        serve.parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_main_builds_the_llm_with_toolspec_and_serves_it(fake_trtllm, model_dir, tools_file):
    code = serve.main(
        [
            model_dir,
            "--tools",
            tools_file,
            "--toolspec-config",
            '{"num_speculative_tokens": 3}',
            "--llm-args",
            '{"max_batch_size": 8}',
            "--tool-parser",
            "qwen3",
            "--served-model-name",
            "smol",
            "--host",
            "0.0.0.0",
            "--port",
            "8123",
        ]
    )
    assert code == 0
    (llm,) = FakeLLM.instances
    spec = llm.kwargs["speculative_config"]
    assert llm.model == model_dir and llm.kwargs["max_batch_size"] == 8 and "tokenizer" not in llm.kwargs
    assert isinstance(spec, UserProvidedDecodingConfig) and spec.max_draft_len == 3
    assert spec.resource_manager.tools == TOOLS
    (server,) = FakeOpenAIServer.instances
    assert (server.llm, server.model, server.tool_parser, server.served) == (llm, "smol", "qwen3", ("0.0.0.0", 8123))
    assert llm.shut_down


def test_main_refuses_a_bad_memory_file_before_loading_the_model(fake_trtllm, model_dir, tmp_path, capsys):
    bad = tmp_path / "memory.json"
    bad.write_text("{")
    code = serve.main([model_dir, "--toolspec-config", json.dumps({"memory_path": str(bad)})])
    assert code == 2
    assert "memory_path" in capsys.readouterr().err
    assert FakeLLM.instances == []


def test_only_arguments_the_server_names_are_passed():
    class OlderServer:
        def __init__(self, llm, model):
            pass

    class NewerServer:
        def __init__(self, llm, model, tool_parser=None, **kwargs):
            pass

    offered = {"llm": 1, "model": "m", "tool_parser": None}
    assert serve.server_kwargs(OlderServer, offered) == {"llm": 1, "model": "m"}
    assert serve.server_kwargs(NewerServer, offered) == offered
