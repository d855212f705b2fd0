"""specplug — SMC-SD, CSD and ToolSpec speculative decoding as plugins for vLLM, SGLang and TensorRT-LLM.

Import roots: `specplug.core` (engine-free algorithms and the pluggy contract), `specplug.plugins.<engine>_<method>`
(engine adapters), and this package's CLI (`specplug ...`).
"""

from importlib import metadata

try:
    __version__ = metadata.version("specplug")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
