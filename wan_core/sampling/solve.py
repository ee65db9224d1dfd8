"""Running one of our solvers over a sigma grid with any denoiser: the hook a host's sampler uses.

A host (ComfyUI's sampler machinery, in ``nodes/``) gives a denoiser ``x0 = denoise(x, sigma_model)``
that may add CFG, patches and caches of its own; :func:`run_steps` steps the official solver
(``schedulers.py``, the same code as :func:`wan_core.sampling.sample`) with it.  The model is
evaluated at ``sigma_model = t / 1000`` where ``t`` is the timestep the official loop gives the
model (an integer for UniPC / DPM++), and the velocity is recovered as ``(x - x0) / sigma_model``;
the solver itself steps on the float sigma grid, as the official code does.

A :class:`SolverRun` keeps the solver state, so one run can be continued by another denoiser (the
Wan2.2 A14B expert switch: multistep history crosses the switch, as in the official loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .schedulers import Schedule, make_solver

INTEGER_TIMESTEPS = ("unipc", "dpm++")


def timesteps_for(scheduler: str, sigmas: torch.Tensor) -> torch.Tensor:
    """The model timesteps for a grid of sigmas [steps + 1] when the grid's own are not known:
    ``sigma * 1000``, truncated to integers for UniPC / DPM++ (as the official solvers do)."""
    t = sigmas[:-1].double() * 1000
    if scheduler in INTEGER_TIMESTEPS:
        t = torch.from_numpy(np.trunc(t.numpy()))
    return t.float()


@dataclass
class SolverRun:
    """A solver over a whole grid, with the index of the next step to take."""

    scheduler: str
    schedule: Schedule
    solver: object
    next_step: int = 0

    @classmethod
    def start(cls, scheduler: str, sigmas: torch.Tensor, timesteps: Optional[torch.Tensor] = None,
              noise_fn: Optional[Callable[[], torch.Tensor]] = None) -> "SolverRun":
        sigmas = sigmas.detach().float().cpu()
        if timesteps is None:
            timesteps = timesteps_for(scheduler, sigmas)
        schedule = Schedule(sigmas, timesteps.float().cpu())
        return cls(scheduler, schedule, make_solver(scheduler, schedule, noise_fn))

    @property
    def remaining(self) -> int:
        return len(self.schedule) - self.next_step


def run_steps(run: SolverRun, x: torch.Tensor, steps: int, denoise: Callable[[torch.Tensor, float], torch.Tensor],
              on_step: Optional[Callable[[int, torch.Tensor, torch.Tensor], None]] = None,
              keep: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """Take ``steps`` steps of ``run`` from ``x``. ``denoise(x, sigma_model) -> x0``;
    ``on_step(i, x, x0)`` after each model call (i counts from the first step of this call);
    ``keep(x) -> x`` re-imposes fixed content (TI2V's start frame) before the first and after each
    step, as the official loop does."""
    if steps > run.remaining:
        raise ValueError(f"{steps} steps asked, {run.remaining} left on this grid")
    if keep is not None:
        x = keep(x)
    for k in range(steps):
        i = run.next_step
        sigma_model = float(run.schedule.timesteps[i]) / 1000.0
        x0 = denoise(x, sigma_model)
        v = (x - x0) / sigma_model
        if on_step is not None:
            on_step(k, x, x0)
        x = run.solver.step(i, v.float(), x.float())
        if keep is not None:
            x = keep(x)
        run.next_step += 1
    return x
