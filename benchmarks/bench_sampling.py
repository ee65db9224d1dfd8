"""Sampling speed at the real 1.3B configuration (random weights, same tensors everywhere): ours
(batched and sequential CFG, and guidance 1.0) vs diffusers WanPipeline vs ComfyUI's KSampler
with its native Wan model; steps per second and peak memory, in one process.

    python benchmarks/bench_sampling.py --steps 2 --frames 9 --height 256 --width 256
"""

from __future__ import annotations

import argparse

import common  # noqa: F401
import torch

from bench_dit import CONFIGS, build
from common import gib, measure, table
from references import comfy
from wan_core.sampling.sampler import SamplerSettings, sample, seeded_noise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="1.3B", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--guidance", type=float, default=5.0)
    args = ap.parse_args()

    from tiny_models import random_dit_state

    cfg = CONFIGS[args.config]
    sd = random_dit_state(cfg, seed=0)
    ours, native, diff = build(cfg, sd)
    shape = (1, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(1, 60, 4096, generator=g), torch.randn(1, 40, 4096, generator=g)
    pad = lambda e: torch.cat([e, e.new_zeros(1, 512 - e.shape[1], 4096)], 1)  # noqa: E731

    def ours_run(batched=True, guidance=args.guidance):
        return sample(ours, pos, neg, torch.zeros(shape), SamplerSettings(
            steps=args.steps, guidance=guidance, shift=5.0, seed=0, batched_cfg=batched))

    from diffusers import UniPCMultistepScheduler, WanPipeline

    from test_vae import TINY21
    from diffusers import AutoencoderKLWan

    dvae = AutoencoderKLWan(base_dim=TINY21.dim, z_dim=16)  # output_type="latent": never decoded
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=dvae, transformer=diff, scheduler=UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0, num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)

    def diffusers_run():
        return pipe(prompt_embeds=pad(pos), negative_prompt_embeds=pad(neg), height=args.height, width=args.width,
                    num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=args.guidance,
                    latents=seeded_noise(shape, 0), output_type="latent").frames

    csd, csample = comfy("comfy.sd"), comfy("comfy.sample")
    del native  # ComfyUI's KSampler needs its own model object (model_base.WAN21 + ModelPatcher)
    patcher = csd.load_diffusion_model_state_dict({"model.diffusion_model." + k: v for k, v in sd.items()},
                                                  model_options={"dtype": torch.float32})
    del sd

    def comfy_run():
        return csample.sample(patcher, seeded_noise(shape, 0), args.steps, args.guidance, "uni_pc", "simple",
                              [[pad(pos), {}]], [[pad(neg), {}]], torch.zeros(shape), denoise=1.0, disable_pbar=True,
                              seed=0)

    runs = {
        "ours, batched CFG": ours_run,
        "ours, sequential CFG": lambda: ours_run(batched=False),
        "ours, guidance 1.0 (no uncond pass)": lambda: ours_run(guidance=1.0),
        "diffusers WanPipeline": diffusers_run,
        "ComfyUI KSampler (native Wan)": comfy_run,
    }
    res = {n: measure(f, runs=1) for n, f in runs.items()}
    base_t, base_m = res["ours, batched CFG"]
    rows = [[n, f"{args.steps / t:.4f}", f"{t / args.steps:.1f} s", gib(m), f"{t / base_t:.2f}x",
             f"{m / max(base_m, 1):.2f}x"] for n, (t, m) in res.items()]
    print(f"\nSampling, {args.config} configuration (random weights, fp32, CPU {torch.get_num_threads()} threads), "
          f"latent {shape} ({args.frames} frames {args.width}x{args.height}), {args.steps} UniPC steps, guidance "
          f"{args.guidance}; one run each; memory = peak RSS growth")
    print(table(rows, ["run", "steps/s", "s/step", "peak mem", "time vs ours batched", "mem vs ours batched"]))


if __name__ == "__main__":
    with torch.no_grad():
        main()
