"""Flow-matching solvers: UniPC (the official default), DPM++ 2M, Euler, and DMD few-step.

x_t = (1 - s) x0 + s noise; the DiT predicts v = noise - x0, so x0 = x_t - s v.  The sigma
grids, the integer timesteps the model receives, and the updates follow the official
``wan.utils.fm_solvers_unipc`` / ``fm_solvers`` (float64 grids, float32 updates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch

SCHEDULERS = ("unipc", "dpm++", "euler", "dmd")
DMD_TIMESTEPS = (1000, 757, 522)
# FastVideo's DMD stage (fastvideo 0.2.1, pipelines/stages/denoising.py, DmdDenoisingStage) reads the
# sigma of each timestep from its own FlowMatchEulerDiscreteScheduler(shift=8.0), whatever the
# pipeline's flow_shift: the nearest entry of that scheduler's 1000-entry table
# (models/utils.py pred_noise_to_pred_video; the scheduler's add_noise), e.g. 757 -> 0.7567567.
DMD_TABLE_SHIFT = 8.0


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """s' = k s / (1 + (k - 1) s)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass
class Schedule:
    """sigmas [steps + 1] (float32, last 0) and the timesteps the model receives [steps]."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor

    def __len__(self):
        return len(self.timesteps)

    def tail(self, steps: int) -> "Schedule":
        """The last ``steps`` steps (partial denoising starts partway down the grid)."""
        return Schedule(self.sigmas[-(steps + 1):], self.timesteps[-steps:])


def dmd_sigmas(timesteps) -> np.ndarray:
    """float32 sigmas of DMD ``timesteps`` as FastVideo looks them up: the table of a 1000-step flow
    scheduler shifted by 8 (float32 ``linspace(1, 1000)`` reversed, ``/ 1000``, shifted; its timesteps
    are ``sigma * 1000``), the entry whose timestep is nearest."""
    table_t = np.linspace(1, 1000, 1000, dtype=np.float32)[::-1] / np.float32(1000)
    table_sigma = shift_sigmas(table_t, DMD_TABLE_SHIFT).astype(np.float32)
    table_timesteps = table_sigma * np.float32(1000)
    want = np.asarray(timesteps, dtype=np.float32)
    return table_sigma[np.abs(table_timesteps[None, :] - want[:, None]).argmin(axis=1)]


def make_schedule(scheduler: str, steps: int, shift: float, dmd_timesteps=DMD_TIMESTEPS) -> Schedule:
    """The official grid for ``scheduler`` (integer timesteps for UniPC/DPM++, as the official loop;
    for DMD the integer timesteps FastVideo gives the model and the sigmas it reads for them)."""
    if scheduler == "dmd":
        return Schedule(torch.from_numpy(np.append(dmd_sigmas(dmd_timesteps), np.float32(0.0))),
                        torch.tensor(dmd_timesteps, dtype=torch.float32))
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if scheduler == "unipc":
        sigma_max = float(np.float32(1.0 - 1.0 / 1000))  # the top of the official training grid, via float32
        sigmas = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    elif scheduler in ("dpm++", "euler"):
        sigmas = np.linspace(1.0, 0.0, steps + 1)[:steps]
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    sigmas = shift_sigmas(sigmas, shift)
    timesteps = torch.from_numpy(sigmas * 1000).to(torch.int64)
    if scheduler == "euler":
        timesteps = torch.from_numpy(sigmas * 1000)
    return Schedule(torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32)), timesteps.float())


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    return torch.log(1 - sigma) - torch.log(sigma)


class UniPCSolver:
    """UniPC, order 2, bh2, predicting x0, corrector from the second step, first order at the end."""

    order = 2

    def __init__(self, schedule: Schedule):
        self.sigmas = schedule.sigmas
        self.n = len(schedule)
        self.outputs: List[Optional[torch.Tensor]] = [None] * self.order
        self.last_sample: Optional[torch.Tensor] = None
        self.this_order = 1
        self.lower_order_nums = 0

    def _coefficients(self, sig_t, sig_s0, earlier: List[torch.Tensor], m0, order):
        h = _lambda(sig_t) - _lambda(sig_s0)
        rks, d1s = [], []
        for sig_si, mi in earlier:
            rk = (_lambda(sig_si) - _lambda(sig_s0)) / h
            rks.append(rk)
            d1s.append((mi - m0) / rk)
        rks.append(torch.tensor(1.0))
        rks = torch.tensor(rks)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial = 1
        b_h = torch.expm1(hh)
        R, b = [], []
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        return torch.stack(R), torch.tensor(b), d1s, h_phi_1, b_h

    def _predict(self, x, i, order):
        m0 = self.outputs[-1]
        sig_t, sig_s0 = self.sigmas[i + 1], self.sigmas[i]
        earlier = [(self.sigmas[i - k], self.outputs[-(k + 1)]) for k in range(1, order)]
        R, b, d1s, h_phi_1, b_h = self._coefficients(sig_t, sig_s0, earlier, m0, order)
        alpha_t = 1 - sig_t
        x_t = sig_t / sig_s0 * x - alpha_t * h_phi_1 * m0
        if d1s:
            rho = torch.tensor([0.5], dtype=x.dtype) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            x_t = x_t - alpha_t * b_h * sum(r * d for r, d in zip(rho.to(x.device), d1s))
        return x_t.to(x.dtype)

    def _correct(self, model_t, i, order):
        m0, x, x_t = self.outputs[-1], self.last_sample, None
        sig_t, sig_s0 = self.sigmas[i], self.sigmas[i - 1]
        earlier = [(self.sigmas[i - (k + 1)], self.outputs[-(k + 1)]) for k in range(1, order)]
        R, b, d1s, h_phi_1, b_h = self._coefficients(sig_t, sig_s0, earlier, m0, order)
        rho = torch.tensor([0.5], dtype=x.dtype) if order == 1 else torch.linalg.solve(R, b).to(x.dtype)
        alpha_t = 1 - sig_t
        x_t = sig_t / sig_s0 * x - alpha_t * h_phi_1 * m0
        corr = sum(r * d for r, d in zip(rho[:-1].to(x.device), d1s)) if d1s else 0
        return (x_t - alpha_t * b_h * (corr + rho[-1].to(x.device) * (model_t - m0))).to(x.dtype)

    def step(self, i: int, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Advance x from grid point i to i+1 given the model's velocity v at x."""
        x0 = x - self.sigmas[i] * v
        if i > 0 and self.last_sample is not None:
            x = self._correct(x0, i, self.this_order)
        self.outputs = self.outputs[1:] + [x0]
        self.this_order = min(self.order, self.n - i, self.lower_order_nums + 1)
        self.last_sample = x
        out = self._predict(x, i, self.this_order)
        self.lower_order_nums = min(self.lower_order_nums + 1, self.order)
        return out


class DPMSolver2M:
    """DPM-Solver++ 2M (midpoint) in flow form; first order on the first and the last step."""

    def __init__(self, schedule: Schedule):
        self.sigmas = schedule.sigmas
        self.n = len(schedule)
        self.prev_x0: Optional[torch.Tensor] = None

    def step(self, i: int, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sig_t, sig_s0 = self.sigmas[i + 1], self.sigmas[i]
        x0 = x - sig_s0 * v
        alpha_t = 1 - sig_t
        h = _lambda(sig_t) - _lambda(sig_s0)
        first_order = self.prev_x0 is None or i == self.n - 1
        phi = torch.exp(-h) - 1.0
        out = (sig_t / sig_s0) * x.float() - (alpha_t * phi) * x0
        if not first_order:
            r0 = (_lambda(sig_s0) - _lambda(self.sigmas[i - 1])) / h
            out = out - 0.5 * (alpha_t * phi) * ((1.0 / r0) * (x0 - self.prev_x0))
        self.prev_x0 = x0
        return out.to(v.dtype)


class EulerSolver:
    """Plain flow Euler: x += (s_next - s) v."""

    def __init__(self, schedule: Schedule):
        self.sigmas = schedule.sigmas

    def step(self, i: int, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x + (self.sigmas[i + 1] - self.sigmas[i]) * v


class DMDSolver:
    """Distribution-matching few-step sampling: predict x0, then re-noise it to the next level
    with fresh noise from ``noise_fn`` (seeded CPU generators, so any device gives the same video)."""

    def __init__(self, schedule: Schedule, noise_fn: Callable[[], torch.Tensor]):
        self.sigmas = schedule.sigmas
        self.noise_fn = noise_fn

    def step(self, i: int, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # x0 in float64 as FastVideo's pred_noise_to_pred_video, the re-noising in the latent's dtype
        x0 = (x.double() - self.sigmas[i].double() * v.double()).to(x.dtype)
        s_next = self.sigmas[i + 1]
        if s_next == 0:
            return x0
        return (1 - s_next) * x0 + s_next * self.noise_fn().to(x)


def make_solver(scheduler: str, schedule: Schedule, noise_fn=None):
    if scheduler == "unipc":
        return UniPCSolver(schedule)
    if scheduler == "dpm++":
        return DPMSolver2M(schedule)
    if scheduler == "euler":
        return EulerSolver(schedule)
    if scheduler == "dmd":
        if noise_fn is None:
            raise ValueError("the DMD solver needs a noise source")
        return DMDSolver(schedule, noise_fn)
    raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
