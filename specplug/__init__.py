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
    """The short dotted paths vLLM users give as a custom proposer, imported lazily:
    `specplug.Proposer` (any specplug method's proposer, named in `--additional-config`) and `specplug.ToolSpec`
    (the same slot with ToolSpec as its default method):
    `--speculative-config '{"model": "specplug.Proposer", "num_speculative_tokens": 8}'`."""
    if name in ("Proposer", "ToolSpec"):
        from specplug.plugins.vllm_smc import proposer_slot

        return proposer_slot.SpecplugProposer if name == "Proposer" else proposer_slot.ToolSpecProposer
    raise AttributeError(f"module 'specplug' has no attribute {name!r}")
