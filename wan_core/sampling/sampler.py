"""The generation loop: noise from seeds, CFG, the solver, the A14B expert switch, TI2V start image.

Works in the DiT's normalised latent space; takes and returns raw VAE latents (as ComfyUI's
LATENT holds them).  Nothing here knows about ComfyUI: progress and cancellation come in as
callbacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .. import latent as latent_space
from ..dit.model import TEXT_KV_REUSE_MAX_TOKENS, TextContext
from .schedulers import DMD_TIMESTEPS, SCHEDULERS, make_schedule, make_solver

log = logging.getLogger(__name__)


class SamplingInterrupted(RuntimeError):
    """Raised between steps when the caller asked to stop."""


@dataclass
class SamplerSettings:
    """What a run needs besides models and prompts (defaults: Wan2.1 T2V official)."""

    steps: int = 50
    guidance: float = 5.0
    shift: float = 5.0
    scheduler: str = "unipc"
    seed: int = 0
    denoise: float = 1.0
    # Wan2.2 A14B: the low-noise expert takes over below boundary * 1000, with its own guidance.
    boundary: float = 0.875
    guidance_low: Optional[float] = None
    dmd_timesteps: Sequence[int] = DMD_TIMESTEPS
    batched_cfg: bool = True
    # Project the text's cross-attention keys/values once per run instead of every step; None = only
    # when the video has at most TEXT_KV_REUSE_MAX_TOKENS tokens (see wan_core.dit.model).
    cache_text_kv: Optional[bool] = None

    def validate(self):
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must be in (0, 1], got {self.denoise}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")


def item_generator(seed: int, i: int) -> torch.Generator:
    """The CPU generator of batch item i: seeded ``seed + i``, wrapping past 2**64 - 1 (the largest seed
    ComfyUI's widgets allow) to 0 instead of overflowing."""
    return torch.Generator().manual_seed((int(seed) + i) % 2**64)


def seeded_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Noise [B, ...] where element i comes from a CPU generator seeded seed + i (device independent)."""
    return torch.stack([torch.randn(tuple(shape[1:]), generator=item_generator(seed, i))
                        for i in range(shape[0])])


class NoiseStream:
    """Fresh noise per call from one CPU generator per batch element (DMD re-noising)."""

    def __init__(self, shape, seed: int):
        self.shape = tuple(shape)
        self.generators = [item_generator(seed, i) for i in range(shape[0])]
        for g in self.generators:  # step past the initial noise drawn from the same seeds
            torch.randn(self.shape[1:], generator=g)

    def __call__(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape[1:], generator=g) for g in self.generators])


def _token_timesteps(t: float, batch: int, frames: int, tokens_per_frame: int, fixed_first: bool, device):
    """[B] timesteps, or [B, L] with the first latent frame at 0 when a start image is fixed."""
    if not fixed_first:
        return torch.full((batch,), float(t), device=device)
    tt = torch.full((batch, frames * tokens_per_frame), float(t), device=device)
    tt[:, :tokens_per_frame] = 0.0
    return tt


def sample(
    model,
    positive: torch.Tensor,
    negative: Optional[torch.Tensor],
    latent: torch.Tensor,
    settings: SamplerSettings,
    model_low=None,
    start_latent: Optional[torch.Tensor] = None,
    callback: Optional[Callable[[int, int, torch.Tensor], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    prepare_model: Optional[Callable[[object], None]] = None,
) -> torch.Tensor:
    """Denoise and return a raw latent [B, C, T, H, W] (fp32).

    ``latent`` is a raw latent: zeros for text-to-video, or the video to re-noise when
    ``denoise`` < 1.  ``positive``/``negative`` are umt5 embeddings [B, <=512, 4096] (a single
    row is repeated over the batch).  ``model_low`` is the Wan2.2 A14B low-noise expert.
    ``start_latent`` [B, C, 1, H, W] (raw) fixes the first latent frame (TI2V-5B image to video).
    ``callback(step, total, x0)`` runs after each step; ``should_stop()`` is checked before each.
    ``prepare_model(m)`` runs right before an expert is first used (ComfyUI loads it to the GPU
    there), so the low-noise expert is not needed in memory until the switch.
    """
    settings.validate()
    device = next(model.parameters()).device
    b, c, frames, h, w = latent.shape
    if c != model.config.in_channels:
        raise ValueError(
            f"latent has {c} channels but the DiT ({model.config.family}) takes {model.config.in_channels}: "
            "use the VAE that belongs to this model (Wan2.1 VAE: 16, Wan2.2 VAE: 48)"
        )
    if model_low is not None and model_low.config.in_channels != c:
        raise ValueError("the two experts take different latent channels; load both experts of the same model")
    guidance_low = settings.guidance if settings.guidance_low is None else settings.guidance_low
    use_cfg = settings.scheduler != "dmd" and (settings.guidance != 1.0 or (model_low is not None and guidance_low != 1.0))
    if use_cfg and negative is None:
        raise ValueError("classifier-free guidance needs a negative prompt embedding")

    # Schedule: partial denoising runs the tail of a longer grid, as ComfyUI's KSampler does.
    if settings.scheduler == "dmd":
        schedule = make_schedule("dmd", 0, settings.shift, settings.dmd_timesteps)
    else:
        total = settings.steps if settings.denoise >= 1.0 else int(settings.steps / settings.denoise)
        schedule = make_schedule(settings.scheduler, total, settings.shift).tail(settings.steps)
    noise = seeded_noise(latent.shape, settings.seed).to(device)
    solver = make_solver(settings.scheduler, schedule, NoiseStream(latent.shape, settings.seed))
    s0 = schedule.sigmas[0].item()
    x = noise if settings.denoise >= 1.0 else (1 - s0) * latent_space.normalize(latent).to(device) + s0 * noise

    fixed = None
    if start_latent is not None:
        fixed = latent_space.normalize(start_latent).to(device)
        if fixed.shape[1] != c or fixed.shape[-2:] != (h, w):
            raise ValueError(f"start image latent {tuple(fixed.shape)} does not match the video latent {tuple(latent.shape)}")
        x[:, :, :1] = fixed
    tokens_per_frame = (h // model.config.patch_size[1]) * (w // model.config.patch_size[2])

    tokens = frames * tokens_per_frame
    cache_kv = settings.cache_text_kv if settings.cache_text_kv is not None else tokens <= TEXT_KV_REUSE_MAX_TOKENS

    def prepared(m, emb):
        emb = emb.to(device).expand(b, -1, -1) if emb.shape[0] == 1 else emb.to(device)
        return m.prepare_text(emb) if cache_kv else m.embed_text(emb)

    def stacked(first, second):
        return TextContext.cat(first, second) if cache_kv else torch.cat([first, second])

    texts = {}

    def activate(m, g):
        """An expert's text, projected once per run (embedding + every block's keys/values); the
        load hook runs first, right before the expert is first used."""
        if id(m) not in texts:
            if prepare_model is not None:
                prepare_model(m)
            pos_ctx = prepared(m, positive)
            if g == 1.0 or settings.scheduler == "dmd":
                texts[id(m)] = (pos_ctx, None, None)
            elif settings.batched_cfg:
                texts[id(m)] = (None, None, stacked(pos_ctx, prepared(m, negative)))
            else:
                texts[id(m)] = (pos_ctx, prepared(m, negative), None)
        return texts[id(m)]

    boundary_t = settings.boundary * 1000
    for i, t in enumerate(schedule.timesteps.tolist()):
        if should_stop is not None and should_stop():
            raise SamplingInterrupted(f"stopped before step {i + 1} of {len(schedule)}")
        high = model_low is None or t >= boundary_t
        m = model if high else model_low
        g = settings.guidance if high else guidance_low
        pos, neg, both = activate(m, g)
        tt = _token_timesteps(t, b, frames, tokens_per_frame, fixed is not None, device)
        if settings.scheduler == "dmd" or g == 1.0:
            v = m.predict(x, tt, pos, text_embedded=True)
        elif settings.batched_cfg:
            v_cond, v_uncond = m.predict(torch.cat([x, x]), torch.cat([tt, tt]), both, text_embedded=True).chunk(2)
            v = v_uncond + g * (v_cond - v_uncond)
        else:
            v_cond = m.predict(x, tt, pos, text_embedded=True)
            v_uncond = m.predict(x, tt, neg, text_embedded=True)
            v = v_uncond + g * (v_cond - v_uncond)
        x0_preview = x - schedule.sigmas[i].item() * v if callback is not None else None
        x = solver.step(i, v.float(), x.float())
        if fixed is not None:
            x[:, :, :1] = fixed
        if callback is not None:
            callback(i + 1, len(schedule), x0_preview)
    return latent_space.denormalize(x)
