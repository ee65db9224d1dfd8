"""wan_core's sampling as ComfyUI's own sampling objects: SAMPLER, SIGMAS, NOISE and a GUIDER.

- :func:`wan_sampler` -> a core ``KSAMPLER`` running one of our solvers (official UniPC, DPM++ 2M,
  Euler, DMD with its re-noising) through :mod:`wan_core.sampling.solve`, so every guider, model
  wrapper and patch of ComfyUI applies around the model calls;
- :func:`official_sigmas` -> the official grid for (scheduler, steps, shift, denoise); the model
  timesteps the official loop uses with it (integers for UniPC / DPM++) are remembered, so our
  SAMPLER evaluates the model exactly there;
- :class:`WanNoise` -> our seed semantics (CPU generator, batch item i = seed + i);
- :class:`ExpertGuider` -> Wan2.2 A14B: the high-noise expert's guider down to the boundary, then
  the low-noise expert's, each expert a MODEL with its own patches and wrappers; our solvers keep
  their multistep state across the switch (as the official loop does).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Optional

import torch

import comfy.k_diffusion.sampling
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers

from ..wan_core.sampling.sampler import NoiseStream, seeded_noise
from ..wan_core.sampling.schedulers import DMD_TIMESTEPS, SCHEDULERS, make_schedule
from ..wan_core.sampling.solve import SolverRun, run_steps, timesteps_for

log = logging.getLogger("wan_core")

# -- official grids -------------------------------------------------------------------------------

# float32 sigmas of an official grid -> (its model timesteps, whether the official loop starts it from
# pure noise: full denoise, where it takes x = noise at the grid's top sigma, e.g. 0.9998 for UniPC).
# Least recently used first: a grid in use is refreshed by every lookup, so a Wan Sigmas output that
# ComfyUI keeps cached across prompts stays known however many other grids are made meanwhile.
_GRIDS: "OrderedDict[bytes, tuple]" = OrderedDict()
GRID_CACHE_SIZE = 1024  # grids of at most 201 floats: under 1 MiB


def _key(sigmas: torch.Tensor) -> bytes:
    return sigmas.detach().float().cpu().numpy().tobytes()


def official_sigmas(scheduler: str, steps: int, shift: float, denoise: float = 1.0) -> torch.Tensor:
    """The official sigma grid [steps + 1] (partial denoise = the tail of a longer grid, as KSampler)."""
    if scheduler == "dmd":
        schedule = make_schedule("dmd", 0, shift, DMD_TIMESTEPS)
    else:
        total = steps if denoise >= 1.0 else int(steps / denoise)
        schedule = make_schedule(scheduler, total, shift).tail(steps)
    key = _key(schedule.sigmas)
    _GRIDS[key] = (schedule.timesteps, scheduler == "dmd" or denoise >= 1.0)
    _GRIDS.move_to_end(key)
    while len(_GRIDS) > GRID_CACHE_SIZE:
        _GRIDS.popitem(last=False)
    return schedule.sigmas.clone()


def grid_info(scheduler: str, sigmas: torch.Tensor):
    """(model timesteps for ``sigmas``, whether the official loop starts them from pure noise): those
    of an official grid ``sigmas`` is (a run of); else ``sigma * 1000`` (truncated where official)."""
    want = sigmas.detach().float().cpu()
    key = _key(want)
    if key in _GRIDS:
        _GRIDS.move_to_end(key)
        return _GRIDS[key]
    n = len(want)
    for key, (timesteps, from_noise) in reversed(_GRIDS.items()):
        grid = torch.frombuffer(bytearray(key), dtype=torch.float32)
        for start in range(len(grid) - n + 1):
            if torch.equal(grid[start:start + n], want):
                _GRIDS.move_to_end(key)
                return timesteps[start:start + n - 1], from_noise and start == 0
    return timesteps_for(scheduler, want), False


# -- NOISE ----------------------------------------------------------------------------------------


class WanNoise:
    """NOISE with wan_core's seeds: item i of a batch from a CPU generator seeded ``seed + i``."""

    def __init__(self, seed: int):
        self.seed = seed

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        return seeded_noise(samples.shape, self.seed).to(dtype=samples.dtype)


# -- SAMPLER --------------------------------------------------------------------------------------


class SharedSolver:
    """Holds one SolverRun across several sampling calls (an object, so model_options copies share it)."""

    def __init__(self, sigmas: torch.Tensor):
        self.sigmas = sigmas
        self.run: Optional[SolverRun] = None


SHARED_KEY = "wan_core_shared_solver"
LOG_SNR_SOLVERS = ("unipc", "dpm++")  # their updates use log((1 - sigma) / sigma)


def wan_sampler(scheduler: str) -> comfy.samplers.KSAMPLER:
    """A core SAMPLER stepping our ``scheduler`` solver (one of unipc, dpm++, euler, dmd)."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = dict(extra_args or {})
        shared = extra_args.get("model_options", {}).get(SHARED_KEY)
        run = shared.run if shared is not None else None
        if run is None:
            full = shared.sigmas if shared is not None else sigmas
            noise_fn = NoiseStream(x.shape, int(extra_args.get("seed") or 0)) if scheduler == "dmd" else None
            timesteps, from_noise = grid_info(scheduler, full)
            if not from_noise and scheduler in LOG_SNR_SOLVERS:
                # a grid from another scheduler may start at sigma 1 (log-SNR -inf): start just below it,
                # as core's own multistep samplers do (the noise is then read at that sigma, as the
                # official loop reads it at its grid's top)
                model_sampling = model.inner_model.model_patcher.get_model_object("model_sampling")
                adjusted = comfy.k_diffusion.sampling.offset_first_sigma_for_snr(full, model_sampling)
                if adjusted is not full:
                    full, timesteps = adjusted, timesteps_for(scheduler, adjusted.detach().float().cpu())
            run = SolverRun.start(scheduler, full, timesteps, noise_fn)
            if shared is not None:
                shared.run = run
            if from_noise and getattr(model, "noise", None) is not None:
                # core scales the noise by the first sigma; the official loop starts from the noise itself
                x = model.noise.to(x)
        s_in = x.new_ones([x.shape[0]])

        def denoise(xx, sigma_model):
            return model(xx, s_in * sigma_model, **extra_args)

        def on_step(k, xx, x0):
            if callback is not None:
                callback({"x": xx, "i": k, "sigma": sigmas[k], "sigma_hat": sigmas[k], "denoised": x0})

        keep = pin_masked(extra_args.get("denoise_mask"), getattr(model, "latent_image", None), x)
        return run_steps(run, x, len(sigmas) - 1, denoise, on_step, keep).to(x.dtype)

    sample.__name__ = f"wan_core_{scheduler}"
    sampler = comfy.samplers.KSAMPLER(sample)
    sampler.wan_core_scheduler = scheduler
    return sampler


def pin_masked(mask, fixed, like):
    """``x -> x`` with the masked content (TI2V start frame: mask 0) put back, or None without a mask;
    the official loop re-imposes it after every step, core only in the model's input."""
    if mask is None or fixed is None:
        return None
    mask, fixed = mask.to(like), fixed.to(like)
    return lambda x: x * mask + fixed * (1.0 - mask)


def model_timesteps(sampler, sigmas: torch.Tensor) -> torch.Tensor:
    """The timestep the model gets at each step: ours as the official loop, core's ``sigma * 1000``."""
    scheduler = getattr(sampler, "wan_core_scheduler", None)
    if scheduler is not None:
        return grid_info(scheduler, sigmas)[0]
    return sigmas[:-1].detach().float().cpu() * 1000


# -- CFG batching -----------------------------------------------------------------------------------


def sequential_cond_batch(args):
    """``sampler_calc_cond_batch_function``: one model pass per condition (less memory than batching)."""
    model, x, sigma, options = args["model"], args["input"], args["sigma"], args["model_options"]
    return [None if c is None else comfy.samplers.calc_cond_batch(model, [c], x, sigma, options)[0]
            for c in args["conds"]]


# -- GUIDER for the A14B expert pair ----------------------------------------------------------------


def cfg_guider(model, positive, negative, cfg: float, sequential: bool = False) -> comfy.samplers.CFGGuider:
    if sequential:
        model = model.clone()
        model.model_options["sampler_calc_cond_batch_function"] = sequential_cond_batch
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


class ExpertGuider:
    """GUIDER for Wan2.2 A14B: steps whose model timestep is >= ``boundary * 1000`` run on the
    high-noise expert, the rest on the low-noise expert; each expert is a full core guider (its
    MODEL's LoRAs, wrappers and patches apply). Only the expert in use needs to be loaded."""

    def __init__(self, high: comfy.samplers.CFGGuider, low: comfy.samplers.CFGGuider, boundary: float):
        self.high, self.low, self.boundary = high, low, boundary
        self.model_patcher = high.model_patcher
        self.model_options = high.model_options

    def switch_index(self, sampler, sigmas: torch.Tensor) -> int:
        t = model_timesteps(sampler, sigmas)
        return int((t >= self.boundary * 1000).sum())

    @staticmethod
    def _sharing(guider, shared: SharedSolver):
        model = guider.model_patcher.clone()
        model.model_options[SHARED_KEY] = shared
        g = comfy.samplers.CFGGuider(model)
        g.original_conds, g.cfg = guider.original_conds, guider.cfg
        return g

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        steps = len(sigmas) - 1
        k = self.switch_index(sampler, sigmas)
        shared = SharedSolver(sigmas)
        high, low = self._sharing(self.high, shared), self._sharing(self.low, shared)
        if k == 0:
            return low.sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        if k == steps:
            return high.sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        log.info("Wan A14B: %d steps on the high-noise expert, %d on the low-noise expert", k, steps - k)
        x = high.sample(noise, latent_image, sampler, sigmas[:k + 1], denoise_mask, callback, disable_pbar, seed)
        shifted = None if callback is None else (lambda i, x0, xx, total: callback(i + k, x0, xx, steps))
        return low.sample(torch.zeros_like(noise), x, sampler, sigmas[k:], denoise_mask, shifted, disable_pbar, seed)
