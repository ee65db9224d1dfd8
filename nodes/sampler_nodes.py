"""Sampling nodes: Wan Sampler (one node, on ComfyUI's sampling machinery) and our solvers, grids,
seeds and the A14B expert switch as core SAMPLER / SIGMAS / NOISE / GUIDER for SamplerCustomAdvanced."""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.utils
import latent_preview
import torch

from ..wan_core.sampling.schedulers import DMD_TIMESTEPS, SCHEDULERS
from .host import check_dit_fits, experts_match, require_finite
from .model_adapter import ComfyWanDiT
from .prompts import embeddings_from_conditioning
from .sampling import ExpertGuider, WanNoise, cfg_guider, official_sigmas, wan_sampler

log = logging.getLogger("wan_core")
CATEGORY = "Wan Video (wan_core)"
SAMPLING = "Wan Video (wan_core)/sampling"


def wan_dit(model, name: str) -> ComfyWanDiT:
    """The wan_core DiT inside a MODEL from Wan Load DiT; a clear error for other models."""
    dit = getattr(getattr(model, "model", None), "diffusion_model", None)
    if not isinstance(dit, ComfyWanDiT):
        kind = type(dit).__name__ if dit is not None else type(model).__name__
        raise ValueError(f"{name}: Wan Sampler runs the Wan DiT loaded by 'Wan Load DiT'; got a {kind}. Use KSampler "
                         "for other models.")
    return dit


def check_finite_latent(x: torch.Tensor, step: int, total: int, sources=()) -> None:
    """Stop a run whose latent turned NaN / inf (it would decode to a black video) at the step it did,
    naming the DiT file(s) that ran."""
    if not bool(torch.isfinite(x).all()):
        files = " and ".join(sources) or "the DiT"
        raise ValueError(f"the latent became NaN or infinite at step {step + 1} of {total} with {files}: non-finite "
                         "weights in that file (download it again) or in a LoRA on it, an extreme LoRA strength, or "
                         "an fp16 overflow (try bf16 / fp32 weight_dtype) is the likely cause; the video would be "
                         "black")


def with_shift(model, shift: float):
    """The model with flow shift ``shift`` in its model sampling (what core ModelSamplingSD3 sets), so
    percent-based patches (EasyCache, SLG ranges) see the grid Wan Sampler samples on."""
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    return ModelSamplingSD3().patch(model, shift)[0]


class PassCounter:
    """DiT passes per sampling step (a step a cache served makes none; context windows make several)."""

    def __init__(self):
        self.start = {}  # id(dit) -> (dit, its pass count before sampling)
        self.per_step = []
        self._seen = 0

    def watch(self, model):
        dit = model.model.diffusion_model
        self.start.setdefault(id(dit), (dit, dit.passes))
        return model

    @property
    def passes(self) -> int:
        return sum(dit.passes - start for dit, start in self.start.values())

    def step_done(self):
        now = self.passes
        self.per_step.append(now - self._seen)
        self._seen = now

    def report(self) -> str:
        steps, passes = len(self.per_step), self.passes
        cached = sum(1 for p in self.per_step if p == 0)
        text = f"Wan Sampler: {steps} steps, {passes} DiT passes"
        if cached:
            per_step = max(self.per_step)
            text += (f" ({cached} steps served by the step cache: {per_step * steps - passes} of "
                     f"{per_step * steps} DiT passes saved)")
        return text


def dmd_settings_fit(scheduler: str, steps: int, guidance: float, denoise: float) -> None:
    """DMD (FastWan) runs FastVideo's 3 fixed steps from pure noise without CFG: refuse other settings,
    naming the input to change (checked before any model is loaded or sampled)."""
    if scheduler != "dmd":
        return
    if steps != len(DMD_TIMESTEPS):
        raise ValueError(f"steps is {steps}: dmd runs {len(DMD_TIMESTEPS)} steps at t = {list(DMD_TIMESTEPS)}; "
                         "set steps to 3")
    if guidance != 1.0:
        raise ValueError(f"guidance is {guidance}: dmd (FastWan) is distilled without classifier-free guidance; "
                         "set guidance to 1.0")
    if denoise != 1.0:
        raise ValueError(f"denoise is {denoise}: dmd starts from pure noise; set denoise to 1.0")


class WanCoreSampler:
    DESCRIPTION = ("Generates a video latent with a Wan DiT: flow matching with UniPC (official default), DPM++ "
                   "2M, Euler, or DMD 3-step (FastWan, no CFG), on ComfyUI's own guider, so LoRAs, EasyCache / "
                   "LazyCache, context windows and guidance patches on the incoming MODELs apply. Connect a second "
                   "MODEL for Wan2.2 A14B: the first is the high-noise expert (t >= boundary), the second the "
                   "low-noise expert.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The Wan DiT from Wan Load DiT, after any LoRA loaders and patches (for "
                                           "A14B: the high-noise expert)."}),
            "positive": ("CONDITIONING", {"tooltip": "Prompt embeddings (Wan Encode Prompts)."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative embeddings; unused when guidance is 1.0 or with DMD."}),
            "latent": ("LATENT", {"tooltip": "From Wan Video Size (or a video latent to re-noise with denoise < 1)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise seed (CPU generator: same video on any device). Batch item i uses "
                                        "seed + i."}),
            "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Denoising steps (DMD: 3)."}),
            "guidance": ("FLOAT", {"default": 5.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                   "tooltip": "Classifier-free guidance. 1.0 skips the negative pass (half the work)."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 30.0, "step": 0.1,
                                "tooltip": "Flow shift: 5 for 480p Wan2.1/5B (templates use 8), 12 for A14B. Also set "
                                           "as the model's sampling shift (as ModelSamplingSD3 would)."}),
            "scheduler": (list(SCHEDULERS), {"default": "unipc",
                                             "tooltip": "unipc (official), dpm++ (2M), euler, dmd (FastWan 3-step)."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "Below 1.0 the input latent is partially re-noised (video to video)."}),
        }, "optional": {
            "model_low_noise": ("MODEL", {"tooltip": "Wan2.2 A14B low-noise expert (used below the boundary), with its "
                                                     "own LoRA chain and patches."}),
            "guidance_low_noise": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                             "tooltip": "Guidance for the low-noise expert (official: 3.0)."}),
            "boundary": ("FLOAT", {"default": 0.875, "min": 0.0, "max": 1.0, "step": 0.005,
                                   "tooltip": "Switch point as a fraction of t = 1000 (T2V A14B: 0.875)."}),
            "cfg_mode": (["batched", "sequential"], {
                "default": "batched", "tooltip": "batched runs positive and negative in one pass when memory allows "
                                                 "(faster); sequential always runs them one after the other (less "
                                                 "memory)."}),
        }}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(self, model, positive, negative, latent, seed, steps, guidance, shift, scheduler, denoise,
            model_low_noise=None, guidance_low_noise=3.0, boundary=0.875, cfg_mode="batched"):
        require_finite(guidance=guidance, shift=shift, denoise=denoise, guidance_low_noise=guidance_low_noise,
                       boundary=boundary)
        dmd_settings_fit(scheduler, steps, guidance, denoise)
        samples = latent["samples"]
        dit = wan_dit(model, "model")
        experts = [(model, guidance)] + ([] if model_low_noise is None else [(model_low_noise, guidance_low_noise)])
        for m, _ in experts[1:]:
            experts_match(dit, wan_dit(m, "model_low_noise"))
        if samples.dim() != 5 or samples.shape[1] != dit.config.latent_channels:
            raise ValueError(
                f"latent has {samples.shape[1] if samples.dim() == 5 else tuple(samples.shape)} channels but the DiT "
                f"({dit.config.family}) takes {dit.config.latent_channels}: use the VAE that belongs to this model "
                "(Wan2.1 VAE: 16, Wan2.2 VAE: 48)")
        if dit.config.condition_channels and not any("concat_latent_image" in c[1] for c in positive or []):
            raise ValueError(
                f"{getattr(dit, 'source', 'the DiT')} is an image-to-video model ({dit.config.family}): its "
                "positive conditioning carries no start image. Connect the prompts through core's "
                "WanImageToVideo (with a start_image) before Wan Sampler, or load a text-to-video DiT.")
        b = samples.shape[0]
        for name, cond in (("positive", positive), ("negative", negative)):
            emb = embeddings_from_conditioning(cond, name)
            if emb.shape[0] not in (1, b):
                raise ValueError(f"{emb.shape[0]} {name} prompts for a batch of {b} latents; set batch_size to the "
                                 "number of prompts (or use one prompt)")

        check_dit_fits(model.model, tuple(samples.shape), model.load_device)
        sources = [s for s in (getattr(wan_dit(m, "model"), "source", None) for m, _ in experts) if s]  # file names
        sigmas = official_sigmas(scheduler, steps, shift, denoise)
        sampler = wan_sampler(scheduler)
        counter = PassCounter()
        sequential = cfg_mode == "sequential"
        guiders = [cfg_guider(counter.watch(with_shift(m, shift)), positive, negative,
                              1.0 if scheduler == "dmd" else g, sequential) for m, g in experts]
        guider = guiders[0] if len(guiders) == 1 else ExpertGuider(guiders[0], guiders[1], boundary)

        preview = latent_preview.prepare_callback(model, len(sigmas) - 1)

        def callback(step, x0, x, total):
            counter.step_done()
            check_finite_latent(x0, step, total, sources)  # the step's prediction: NaN shows where it arises
            preview(step, x0, x, total)

        out = guider.sample(WanNoise(seed).generate_noise(latent), samples, sampler, sigmas,
                            denoise_mask=latent.get("noise_mask"), callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        log.info(counter.report())
        result = dict(latent)
        result["samples"] = out.to(mm.intermediate_device())
        return (result,)


class WanCoreSamplerSelect:
    DESCRIPTION = ("One of wan_core's official-exact solvers as a core SAMPLER, for SamplerCustomAdvanced / "
                   "SamplerCustom with any guider: UniPC (the official default), DPM++ 2M, Euler, or DMD (FastWan, "
                   "re-noising with the seed's CPU generators).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"scheduler": (list(SCHEDULERS), {
            "default": "unipc", "tooltip": "unipc (official), dpm++ (2M), euler, dmd (FastWan 3-step)."})}}

    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get"
    CATEGORY = SAMPLING

    def get(self, scheduler):
        return (wan_sampler(scheduler),)


class WanCoreSigmas:
    DESCRIPTION = ("The official sigma grid for a scheduler, steps, flow shift and denoise (DMD: t = 1000, 757, "
                   "522), as core SIGMAS. With Wan Sampler Select the model gets the official timesteps.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "scheduler": (list(SCHEDULERS), {"default": "unipc", "tooltip": "Whose official grid."}),
            "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Denoising steps (DMD: 3)."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 30.0, "step": 0.1, "tooltip": "Flow shift."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "Below 1.0: the tail of a longer grid (as KSampler)."}),
        }}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get"
    CATEGORY = SAMPLING

    def get(self, scheduler, steps, shift, denoise):
        require_finite(shift=shift, denoise=denoise)
        return (official_sigmas(scheduler, steps, shift, denoise),)


class WanCoreNoise:
    DESCRIPTION = ("Noise with wan_core's seeds: a CPU generator (the same video on any device) and batch item i "
                   "seeded seed + i (item i of a batch equals a single run with seed + i).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                                    "control_after_generate": True, "tooltip": "The seed."})}}

    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get"
    CATEGORY = SAMPLING

    def get(self, noise_seed):
        return (WanNoise(noise_seed),)


class WanCoreExpertGuider:
    DESCRIPTION = ("Wan2.2 A14B as one GUIDER: the high-noise expert with its guidance down to the boundary, then "
                   "the low-noise expert with its own. Each expert's LoRAs and patches apply; with Wan Sampler Select "
                   "the solver's multistep state crosses the switch (as the official loop).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_high_noise": ("MODEL", {"tooltip": "The high-noise expert (t >= boundary)."}),
            "model_low_noise": ("MODEL", {"tooltip": "The low-noise expert."}),
            "positive": ("CONDITIONING", {"tooltip": "Prompt embeddings."}),
            "negative": ("CONDITIONING", {"tooltip": "Negative embeddings."}),
            "cfg_high_noise": ("FLOAT", {"default": 4.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                         "tooltip": "Guidance on the high-noise expert (official: 4.0)."}),
            "cfg_low_noise": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "Guidance on the low-noise expert (official: 3.0)."}),
            "boundary": ("FLOAT", {"default": 0.875, "min": 0.0, "max": 1.0, "step": 0.005,
                                   "tooltip": "Switch point as a fraction of t = 1000 (T2V A14B: 0.875)."}),
        }}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get"
    CATEGORY = SAMPLING

    def get(self, model_high_noise, model_low_noise, positive, negative, cfg_high_noise, cfg_low_noise, boundary):
        require_finite(cfg_high_noise=cfg_high_noise, cfg_low_noise=cfg_low_noise, boundary=boundary)
        if isinstance(getattr(model_high_noise.model, "diffusion_model", None), ComfyWanDiT) and \
                isinstance(getattr(model_low_noise.model, "diffusion_model", None), ComfyWanDiT):
            experts_match(model_high_noise.model.diffusion_model, model_low_noise.model.diffusion_model)
        return (ExpertGuider(cfg_guider(model_high_noise, positive, negative, cfg_high_noise),
                             cfg_guider(model_low_noise, positive, negative, cfg_low_noise), boundary),)
