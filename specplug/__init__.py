"""specplug — SMC-SD, CSD and ToolSpec speculative decoding as plugins for vLLM, SGLang and TensorRT-LLM.

Import roots: `specplug.core` (engine-free algorithms and the pluggy contract), `specplug.plugins.<engine>_<method>`
(engine adapters), and this package's CLI (`specplug ...`).
"""

from importlib import metadata

try:
    __version__ = metadata.version("specplug")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    """`specplug.ToolSpec`: the short dotted path vLLM users give as a custom proposer
    (`--speculative-config '{"model": "specplug.ToolSpec", "num_speculative_tokens": 8}'`), imported lazily."""
    if name == "ToolSpec":
        from specplug.plugins.vllm_smc.toolspec_proposer import ToolSpecProposer

        return ToolSpecProposer
    raise AttributeError(f"module 'specplug' has no attribute {name!r}")
