"""CSD (calibrated speculative decoding): settings here; the verifier is `core.verifiers.calibrated`, the
memory `core.memory.correction` and its file `core.memory.correction_bank`."""

from specplug.core.csd.config import CSDConfig

__all__ = ["CSDConfig"]
