"""CSD (calibrated speculative decoding), all in this package: settings (`config`), the calibrated verifier
(`verifier`), the online correction memory (`memory`) and its namespaced file (`bank`), and the hook
implementations that join them to any engine host (`plugin`)."""

from specplug.core.csd.config import CSDConfig

__all__ = ["CSDConfig"]
