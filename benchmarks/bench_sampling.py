"""Sampling at the real 1.3B configuration (random weights, same tensors everywhere).

throughput: ours (batched and sequential CFG, guidance 1.0) vs diffusers WanPipeline vs ComfyUI's
KSampler with its native Wan model; steps per second and peak memory, in one process.
caching: DiT passes and wall time of Wan Sampler with core EasyCache / LazyCache in front, against
the same run without caching and against native KSampler + EasyCache on the same file (counts and
ratios only: random weights say nothing about quality).

    python benchmarks/bench_sampling.py --section throughput --steps 2 --frames 9 --height 256 --width 256
    python benchmarks/bench_sampling.py --section caching --cache-steps 30 --cache-frames 5 --cache-height 64 --cache-width 64
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
    ap.add_argument("--section", default="all", choices=["all", "throughput", "caching"])
    ap.add_argument("--config", default="1.3B", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--cache-steps", type=int, default=30)
    ap.add_argument("--cache-frames", type=int, default=5)
    ap.add_argument("--cache-height", type=int, default=64)
    ap.add_argument("--cache-width", type=int, default=64)
    ap.add_argument("--tmp", default=None, help="folder for the caching section's model file")
    args = ap.parse_args()
    if args.section in ("all", "throughput"):
        throughput(args)
    if args.section in ("all", "caching"):
        caching(args)


def throughput(args):
    from tiny_models.dit import random_dit_state

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

    from tiny_models.vae import TINY21
    from diffusers import AutoencoderKLWan

    dvae = AutoencoderKLWan(base_dim=TINY21.dim, z_dim=16)  # output_type="latent": never decoded
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=dvae, transformer=diff, scheduler=UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0, num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)

    def diffusers_run():
        return pipe(prompt_embeds=pad(pos), negative_prompt_embeds=pad(neg), height=args.height, width=args.width,
                    num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=args.guidance,
                    latents=seeded_noise(shape, 0), output_type="latent").frames

    # Wan Sampler on ComfyUI's guider: our MODEL (core WAN21 + ModelPatcher) over the same tensors
    import comfy_inprocess as ci

    ci.host()
    adapter, core_model = ci.pack_module("nodes.model_adapter"), ci.pack_module("nodes.core_model")
    with torch.device("meta"):
        dit = adapter.ComfyWanDiT(cfg)
    dit.load_state_dict(sd, assign=True)
    our_model = core_model.wrap_dit(dit.requires_grad_(False).eval(), torch.device("cpu"), torch.device("cpu"))
    wan_sampler = ci.pack_module("nodes.sampler_nodes").WanCoreSampler()

    def wan_sampler_run():
        return wan_sampler.run(our_model, [[pad(pos), {}]], [[pad(neg), {}]], {"samples": torch.zeros(shape)}, 0,
                               args.steps, args.guidance, 5.0, "unipc", 1.0)

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
        "Wan Sampler (core guider + our SAMPLER)": wan_sampler_run,
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


def caching(args):
    """Step caches in front of Wan Sampler vs none vs native KSampler with the same cache."""
    import os
    import tempfile
    import time

    from safetensors.torch import save_file

    import comfy_inprocess as ci
    from tiny_models.dit import random_dit_state

    core = ci.host()
    import comfy.sd

    cfg = CONFIGS[args.config]
    steps = args.cache_steps
    shape = (1, 16, (args.cache_frames - 1) // 4 + 1, args.cache_height // 8, args.cache_width // 8)
    g = torch.Generator().manual_seed(0)
    pos, neg = [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]], [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]]
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        # fp32 storage: at a short clip a bf16 model spends its time casting weights, not computing
        path = os.path.join(d, "wan2.1_t2v_1.3B_fp32.safetensors")
        save_file({f"model.diffusion_model.{k}": v for k, v in random_dit_state(cfg).items()}, path)
        ours = ci.pack_module("nodes.loaders").load_wan_model(path)
        native = comfy.sd.load_diffusion_model(path)
    sampler = ci.pack_module("nodes.sampler_nodes").WanCoreSampler()
    dit = ours.model.diffusion_model
    native_calls = [0]
    inner = native.model.diffusion_model.forward_orig

    def counted(*a, **k):
        native_calls[0] += 1
        return inner(*a, **k)

    native.model.diffusion_model.forward_orig = counted

    def cache(model, node, threshold):
        if node is None:
            return model
        return ci.run_node(node, model=model, reuse_threshold=threshold, start_percent=0.15, end_percent=0.95,
                           verbose=False)[0]

    def run_ours(node=None, threshold=0.2):
        before = dit.passes
        sampler.run(cache(ours, node, threshold), pos, neg, {"samples": torch.zeros(shape)}, 0, steps, args.guidance,
                    5.0, "euler", 1.0)
        return dit.passes - before

    def run_native(node=None, threshold=0.2):
        before = native_calls[0]
        model = ci.run_node("ModelSamplingSD3", model=cache(native, node, threshold), shift=5.0)[0]
        core.common_ksampler(model, 0, steps, args.guidance, "euler", "simple", pos, neg,
                             {"samples": torch.zeros(shape)})
        return native_calls[0] - before

    runs = [("Wan Sampler, no cache", lambda: run_ours()),
            ("Wan Sampler + EasyCache (default 0.2)", lambda: run_ours("EasyCache", 0.2)),
            ("Wan Sampler + LazyCache (default 0.2)", lambda: run_ours("LazyCache", 0.2)),
            ("Wan Sampler + EasyCache (threshold 1.0)", lambda: run_ours("EasyCache", 1.0)),
            ("native KSampler, no cache", lambda: run_native()),
            ("native KSampler + EasyCache (default 0.2)", lambda: run_native("EasyCache", 0.2)),
            ("native KSampler + EasyCache (threshold 1.0)", lambda: run_native("EasyCache", 1.0))]
    res = {}
    for name, fn in runs:
        t0 = time.perf_counter()
        passes = fn()
        res[name] = (passes, time.perf_counter() - t0)
    base_p, base_t = res["Wan Sampler, no cache"]
    nat_p, nat_t = res["native KSampler + EasyCache (default 0.2)"]
    rows = [[n, p, f"{t:.1f} s", f"{p / base_p:.2f}x", f"{t / base_t:.2f}x", f"{t / nat_t:.2f}x"]
            for n, (p, t) in res.items()]
    tokens = shape[2] * (shape[3] // 2) * (shape[4] // 2)
    print(f"\nStep caching, {args.config} configuration (random weights, fp32, CPU "
          f"{torch.get_num_threads()} threads), latent {shape} ({tokens} tokens), {steps} euler steps, guidance "
          f"{args.guidance} (cond + uncond in one pass), start 0.15 / end 0.95; one run each")
    print(table(rows, ["run", "DiT passes", "wall", "passes vs no cache", "time vs no cache",
                       "time vs native + EasyCache"]))
    print("(random weights change the output ~0.6 per step where trained models change far less, so the default "
          "threshold 0.2 may skip nothing here; threshold 1.0 shows the mechanism. No quality claim.)")


if __name__ == "__main__":
    with torch.no_grad():
        main()
