"""SMC-SD (sequential Monte Carlo speculative decoding) in engine-neutral tensor code.

Engines move tokens, logits and KV blocks; this package decides what the particles' weights are, when a group
resamples, which lineage each particle slot continues (the fork plan) and which particle a request returns.
"""

from specplug.core.smc.config import SMCConfig
from specplug.core.smc.resample import ForkPlan
from specplug.core.smc.sampler import CycleResult, FinalResult, SMCSampler
from specplug.core.smc.state import ParticleState

__all__ = ["CycleResult", "FinalResult", "ForkPlan", "ParticleState", "SMCConfig", "SMCSampler"]
