"""Flow-matching sampling: official solvers and grids, the generation loop."""

from .sampler import SamplerSettings, SamplingInterrupted, sample, seeded_noise
from .schedulers import SCHEDULERS, make_schedule, make_solver

__all__ = ["SamplerSettings", "SamplingInterrupted", "sample", "seeded_noise", "SCHEDULERS", "make_schedule",
           "make_solver"]
