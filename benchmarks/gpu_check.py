"""GPU acceptance run: our DiT against ComfyUI's native one on a real GPU, under the host's default
flags (DynamicVRAM on where comfy-aimdo works), through headless ComfyUI servers. One table.

Files are written locally with random weights at the real sizes: the Wan2.1 1.3B DiT in bf16, an
A14B-size GGUF Q4_K expert pair with a rank-64 lightx2v-layout LoRA per expert; the text encoder
and VAE are the tiny stand-ins (not what is measured).

1. 1.3B bf16, 832x480, 33 frames, 4 UniPC steps, guidance 5, through core ModelSamplingSD3 +
   KSampler: ours (Wan Load DiT) against native (UNETLoader) on the same file, the same
   conditioning and seed. Wall time of a warm job, the CUDA allocator's peak and the device memory
   in use (a probe node at the end of the graph), the output latent's difference in bf16.
2. The same with attention forced to sage / flash_attn (when installed) and under core
   TorchCompileModel: warm time and difference against ours with attention auto.
3. Decode of a Wan2.2 latent for 121 frames at 1280x704 right after the 5B DiT (bf16, real size)
   sampled a small clip on the same server, so the DiT is resident when the decode asks for room:
   ours (Wan Decode) against core VAEDecode, each on its own server: peak CUDA memory and whether
   either fell back to tiles (their log lines).
4. The A14B GGUF pair with a LoRA per expert (our Lightning workflow: 4 steps, guidance 1), 480p,
   on a server with ample VRAM and on one started with --reserve-vram so that the two experts do
   not fit together: the host partially unloads the high-noise expert for the low-noise one and
   brings it back in the next job. The second job's latent must equal the unconstrained one (a LoRA
   applied twice or lost would move it by its whole effect).

    bash scripts/gpu_check.sh            # about 6-8 minutes on one H100/H200 class GPU
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (paths)
import torch

from bench_workflow import run_job
from common import table
from wan_client.server import ComfyServer
from wan_client.workflow import Workflow

ROOT = Path(common.ROOT)
PROBE = ROOT / "benchmarks" / "gpu_probe"
DIT13 = "wan2.1_t2v_1.3B_bf16.safetensors"
TE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
A14B_WORKFLOW = ROOT / "workflows" / "wan2.2_t2v_A14B_gguf_lightning_api.json"
PROMPT = "A red fox trots through fresh snow in a birch forest at golden hour, cinematic lighting."


def write_models(root: Path) -> None:
    from safetensors.torch import save_file
    from tiny_models.dit import random_dit_state
    from tiny_models.gguf_files import write_real_size_wan_gguf
    from tiny_models.loras import lora_state
    from tiny_models.stand_ins import write_stand_ins
    from wan_core.dit.config import WanDiTConfig

    write_stand_ins(root)  # tiny text encoder and VAEs under the real names
    dm, loras = root / "diffusion_models", root / "loras"
    if not (dm / DIT13).exists():
        print("writing the 1.3B DiT (bf16, random weights) ...", flush=True)
        sd = random_dit_state(WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30), seed=0)
        save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(dm / DIT13))
        del sd
    a14b = WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
    marker = root / ".a14b_real_size"
    if not marker.exists():
        for i, name in enumerate(("HighNoise", "LowNoise")):
            print(f"writing the A14B {name} expert (GGUF Q4_K, random blocks) ...", flush=True)
            write_real_size_wan_gguf(a14b, dm / f"Wan2.2-T2V-A14B-{name}-Q4_K_M.gguf", seed=i + 1)
        for i, name in enumerate(("high_noise", "low_noise")):
            lora = lora_state(a14b, "lightx2v", rank=64, seed=20 + i)
            save_file({k: v.to(torch.bfloat16) for k, v in lora.items()},
                      str(loras / f"wan2.2_t2v_lightx2v_4steps_lora_v1.1_{name}.safetensors"))
        marker.write_text("real-size A14B experts and LoRAs written")


def t2v_graph(loader: dict, prefix: str, args, compile_model: bool = False, seed: int = 0) -> dict:
    """Core's sampling graph on the MODEL from ``loader``; conditioning from our text encoder. A
    first job of each kind runs with seed 1 (it loads; and a new seed keeps ComfyUI from serving the
    next job from its cache), the measured warm job with seed 0."""
    model = ["1", 0]
    p = {
        "1": loader,
        "2": {"class_type": "WanCoreLoadTextEncoder", "inputs": {"text_encoder_name": TE, "device": "default",
                                                                  "dtype": "default"}},
        "3": {"class_type": "WanCoreEncodePrompts", "inputs": {"text_encoder": ["2", 0], "positive": PROMPT,
                                                               "negative": "", "one_prompt_per_line": False}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": args.width, "height": args.height,
                                                                 "length": args.frames, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": args.steps, "cfg": 5.0, "sampler_name": "uni_pc",
                                                   "scheduler": "simple", "positive": ["3", 0], "negative": ["3", 1],
                                                   "latent_image": ["6", 0], "denoise": 1.0, "model": ["7", 0]}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": prefix}},
        "10": {"class_type": "WanBenchCudaPeak", "inputs": {"samples": ["8", 0]}},
    }
    if compile_model:
        p["c"] = {"class_type": "TorchCompileModel", "inputs": {"model": model, "backend": "inductor"}}
        model = ["c", 0]
    p["7"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": model, "shift": 5.0}}
    return p


DIT5B, VAE22 = "wan2.2_ti2v_5B_bf16.safetensors", "wan2.2_vae.safetensors"


def write_5b(root: Path, dit: bool = True) -> None:
    from safetensors.torch import save_file
    from tiny_models.dit import random_dit_state
    from tiny_models.vae import random_vae_state
    from wan_core.dit.config import WanDiTConfig
    from wan_core.vae import WanVAEConfig

    if dit and not (root / "diffusion_models" / DIT5B).exists():
        print("writing the TI2V-5B DiT (bf16, random weights) ...", flush=True)
        cfg = WanDiTConfig(in_channels=48, out_channels=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30)
        sd = random_dit_state(cfg, seed=5)
        save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(root / "diffusion_models" / DIT5B))
        del sd
    marker = root / ".vae22_real_size"
    if not marker.exists():  # the stand-in Wan2.2 VAE is tiny: replace it by a real-size one
        save_file(random_vae_state(WanVAEConfig("2.2", z_dim=48, dim=160, dec_dim=256), seed=6),
                  str(root / "vae" / VAE22))
        marker.write_text("real-size Wan2.2 VAE written")


def decode_after_dit_graphs(impl: str, args) -> tuple:
    """(a small 5B sampling job that leaves the DiT loaded, the big decode job) for ``impl``."""
    sample = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": DIT5B, "weight_dtype": "default"}},
        "2": {"class_type": "WanCoreLoadTextEncoder", "inputs": {"text_encoder_name": TE, "device": "default",
                                                                  "dtype": "default"}},
        "3": {"class_type": "WanCoreEncodePrompts", "inputs": {"text_encoder": ["2", 0], "positive": PROMPT,
                                                               "negative": "", "one_prompt_per_line": False}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": VAE22}},
        "5": {"class_type": "Wan22ImageToVideoLatent", "inputs": {"vae": ["4", 0], "width": 320, "height": 192,
                                                                  "length": 5, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "positive": ["3", 0], "negative": ["3", 1],
                                                   "latent_image": ["5", 0], "denoise": 1.0, "model": ["1", 0]}},
        "7": {"class_type": "WanBenchCudaPeak", "inputs": {"samples": ["6", 0]}},
    }
    if impl == "ours":
        sample["1"] = {"class_type": "WanCoreLoadDiT", "inputs": {"dit_name": DIT5B, "weight_dtype": "default",
                                                                  "attention": "auto"}}
    decode = {
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": VAE22}},
        "5": {"class_type": "Wan22ImageToVideoLatent", "inputs": {"vae": ["4", 0], "width": args.decode_size[0],
                                                                  "height": args.decode_size[1],
                                                                  "length": args.decode_size[2], "batch_size": 1}},
    }
    if impl == "ours":
        decode["8"] = {"class_type": "WanCoreLoadVAE", "inputs": {"vae_name": VAE22, "dtype": "default"}}
        decode["9"] = {"class_type": "WanCoreDecode", "inputs": {"vae": ["8", 0], "samples": ["5", 0], "tiled": False,
                                                                 "tile_size": 512, "tile_overlap": 64}}
    else:
        decode["9"] = {"class_type": "VAEDecode", "inputs": {"vae": ["4", 0], "samples": ["5", 0]}}
    decode["10"] = {"class_type": "WanBenchCudaPeakImage", "inputs": {"samples": ["9", 0]}}
    return sample, decode


def probe_job(server: ComfyServer, prompt: dict, timeout: float) -> dict:
    """Run one graph; wall time and the probe node's readings."""
    r = asyncio.run(run_job(server, prompt, timeout))
    probe = next(o for o in r["entry"]["outputs"].values() if "cuda_peak_bytes" in o)
    r.update(peak=probe["cuda_peak_bytes"][0], used=probe["device_used_bytes"][0])
    return r


def ours_loader(attention="auto"):
    return {"class_type": "WanCoreLoadDiT", "inputs": {"dit_name": DIT13, "weight_dtype": "default",
                                                       "attention": attention}}


def native_loader():
    return {"class_type": "UNETLoader", "inputs": {"unet_name": DIT13, "weight_dtype": "default"}}


def a14b_graph(prefix: str, args, seed: int = 0) -> dict:
    wf = Workflow.load(A14B_WORKFLOW).with_settings({"prompt": PROMPT, "seed": seed, "steps": 4,
                                                     "size": f"{args.width}x{args.height}", "frames": args.frames})
    p = wf.prompt
    sampler = next(k for k, v in p.items() if v["class_type"] == "WanCoreSampler")
    p["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": prefix}}
    p["901"] = {"class_type": "WanBenchCudaPeak", "inputs": {"samples": [sampler, 0]}}
    return p


def job(server: ComfyServer, prompt: dict, timeout: float) -> dict:
    """Run one graph; wall time, probe readings and the saved latent."""
    from safetensors.torch import load_file

    r = probe_job(server, prompt, timeout)
    latent_file = server.output_files(r["entry"], ".latent")[0]
    r["latent"] = load_file(str(latent_file))["latent_tensor"].float()
    return r


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def partial_unloads(server: ComfyServer) -> int:
    return len(re.findall(r"Unloaded partially", server.read_log()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="folder for the files (kept; default: a temp dir)")
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--a14b-budget-gib", type=float, default=14.0,
                    help="usable VRAM of the constrained server (less than the two experts)")
    ap.add_argument("--decode-size", type=int, nargs=3, default=[1280, 704, 121], metavar=("W", "H", "FRAMES"))
    ap.add_argument("--skip", nargs="*", default=[], choices=["attention", "compile", "vae", "a14b"])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--smoke", action="store_true",
                    help="check the script itself on the CPU: stand-in models, tiny size, --cpu servers (no numbers)")
    args = ap.parse_args()
    if args.smoke:
        global DIT13, DIT5B
        DIT13, DIT5B = "wan2.1_t2v_1.3B_fp16.safetensors", "wan2.2_ti2v_5B_fp16.safetensors"  # the stand-ins
        args.width, args.height, args.frames, args.steps = 64, 64, 5, 2
        args.decode_size = [64, 64, 5]
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA GPU (torch.cuda.is_available() is False here); --smoke checks "
                         "the script on the CPU")
    if not args.comfyui:
        raise SystemExit("no ComfyUI: pass --comfyui or source ~/.cache/wan-video-pack/env.sh")
    t_start = time.time()
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(args.models) if args.models else Path(tmp) / "models"
        if args.smoke:
            from tiny_models.stand_ins import write_stand_ins

            write_stand_ins(models)
        else:
            write_models(models)
        rows = []
        start = lambda name, extra=(): ComfyServer(args.comfyui, models, Path(tmp) / name, python=sys.executable,  # noqa: E731
                                                   cpu=args.smoke, extra_args=extra,
                                                   extra_custom_nodes={"wan_bench_probe": PROBE}).start()
        results = {}
        for name, loader in (("native", native_loader()), ("ours", ours_loader())):
            server = start(name)
            try:
                first = job(server, t2v_graph(loader, name, args, seed=1), args.timeout)
                warm = job(server, t2v_graph(loader, name, args), args.timeout)
                results[name] = (first, warm)
                if name == "ours":
                    for backend in ("sage", "flash_attn"):
                        if "attention" in args.skip:
                            break
                        choices = server.get("/object_info/WanCoreLoadDiT")["WanCoreLoadDiT"]["input"]["required"][
                            "attention"][0]
                        if backend not in choices:
                            rows.append([f"1.3B ours, attention {backend}", "not installed", "", "", "", ""])
                            continue
                        job(server, t2v_graph(ours_loader(backend), f"ours_{backend}", args, seed=1), args.timeout)
                        w = job(server, t2v_graph(ours_loader(backend), f"ours_{backend}", args), args.timeout)
                        rows.append([f"1.3B ours, attention {backend}", f"{w['wall']:.1f} s", gib(w["peak"]),
                                     gib(w["used"]), f"{rel(w['latent'], warm['latent']):.2e} vs ours auto", ""])
                    if "compile" not in args.skip:
                        c1 = job(server, t2v_graph(ours_loader(), "ours_compiled", args, compile_model=True, seed=1),
                                 args.timeout)
                        c2 = job(server, t2v_graph(ours_loader(), "ours_compiled", args, compile_model=True), args.timeout)
                        rows.append(["1.3B ours + TorchCompileModel", f"{c2['wall']:.1f} s", gib(c2["peak"]),
                                     gib(c2["used"]), f"{rel(c2['latent'], warm['latent']):.2e} vs ours auto",
                                     f"first (compiling) job {c1['wall']:.1f} s"])
            finally:
                server.stop()
        (nf, nw), (of, ow) = results["native"], results["ours"]
        rows[:0] = [
            ["1.3B native (UNETLoader)", f"{nw['wall']:.1f} s", gib(nw["peak"]), gib(nw["used"]), "reference",
             f"first job {nf['wall']:.1f} s"],
            ["1.3B ours (Wan Load DiT)", f"{ow['wall']:.1f} s", gib(ow["peak"]), gib(ow["used"]),
             f"{rel(ow['latent'], nw['latent']):.2e} vs native",
             f"first job {of['wall']:.1f} s; time {ow['wall'] / nw['wall']:.2f}x, peak {ow['peak'] / max(nw['peak'], 1):.2f}x"],
        ]
        if "vae" not in args.skip:
            write_5b(models, dit=not args.smoke)  # (the smoke run samples with the stand-in 5B)
            for impl in ("native", "ours"):
                server = start(f"vae_{impl}")
                try:
                    sample, decode = decode_after_dit_graphs(impl, args)
                    probe_job(server, sample, args.timeout)  # the 5B DiT is now resident
                    d = probe_job(server, decode, args.timeout)
                    log = server.read_log()
                    tiles = ("Ran out of memory when regular VAE decoding" in log) or ("retrying in tiles" in log)
                finally:
                    server.stop()
                w, h, n = args.decode_size
                rows.append([f"5B decode {n} frames {w}x{h} after the 5B DiT, {impl}", f"{d['wall']:.1f} s",
                             gib(d["peak"]), gib(d["used"]), "",
                             ("fell back to tiles" if tiles else "no tiling")
                             + ("; wall includes loading our VAE" if impl == "ours" else "")])
        if "a14b" not in args.skip:
            total = torch.cuda.get_device_properties(0).total_memory / 2**30 if not args.smoke else 0.0
            ref_server = start("a14b_ample")
            try:
                ref = job(ref_server, a14b_graph("a14b_ample", args), args.timeout)
            finally:
                ref_server.stop()
            reserve = max(0.0, total - args.a14b_budget_gib)
            tight = start("a14b_tight", ("--reserve-vram", f"{reserve:.1f}") if not args.smoke else ())
            try:
                t1 = job(tight, a14b_graph("a14b_tight", args, seed=1), args.timeout)
                t2 = job(tight, a14b_graph("a14b_tight", args), args.timeout)
                unloads = partial_unloads(tight)
            finally:
                tight.stop()
            rows += [
                ["A14B GGUF Q4_K pair + LoRA each, ample VRAM", f"{ref['wall']:.1f} s", gib(ref["peak"]),
                 gib(ref["used"]), "reference", "first job (loads both experts)"],
                [f"A14B, --reserve-vram {reserve:.0f} (~{args.a14b_budget_gib:.0f} GiB usable), 2nd job",
                 f"{t2['wall']:.1f} s", gib(t2["peak"]), gib(t2["used"]),
                 f"{rel(t2['latent'], ref['latent']):.2e} vs ample",
                 f"'Unloaded partially' {unloads}x in the log; 1st job (seed 1) {t1['wall']:.1f} s"],
            ]
        device = torch.cuda.get_device_name(0) if not args.smoke else "SMOKE RUN on the CPU (stand-ins; not a measurement)"
        print(f"\nGPU acceptance run: {device}, torch {torch.__version__}, ComfyUI default flags; "
              f"{args.frames} frames {args.width}x{args.height}, {args.steps} steps; total {time.time() - t_start:.0f} s")
        print(table(rows, ["case", "warm job", "CUDA alloc peak", "device used", "output difference", "notes"]))


if __name__ == "__main__":
    main()
