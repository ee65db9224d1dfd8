"""VAE decode time/memory (ours untiled and tiled, ComfyUI native, diffusers; real-size Wan2.1 VAE,
random weights, shared tensors) and umt5-xxl loading memory from an fp8-scaled file of the real size.

    python benchmarks/bench_vae.py --frames 9 --height 256 --width 256      # default: minutes on a CPU
    python benchmarks/bench_vae.py --frames 81 --height 480 --width 832     # the issue's size (hours on a CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import common  # noqa: F401
import torch

from common import gib, measure, table
from references import comfy
from tiny_models.vae import random_vae_state
from wan_core.vae import WanVAE, WanVAEConfig, decode_tiled
from wan_core.vae.keymap import vae_key_pairs

REAL21 = WanVAEConfig("2.1", z_dim=16, dim=96, dec_dim=96)


def bench_decode(args):
    sd = random_vae_state(REAL21, seed=0)
    ours = WanVAE(REAL21).requires_grad_(False)
    ours.load_state_dict(sd, assign=True)
    native = comfy("comfy.ldm.wan.vae").WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                                 attn_scales=[], temperal_downsample=[False, True, True])
    native.load_state_dict(sd, assign=True)
    from diffusers import AutoencoderKLWan

    diff = AutoencoderKLWan(base_dim=96, z_dim=16)
    pairs = vae_key_pairs(REAL21)
    diff.load_state_dict({pairs[k]: v for k, v in sd.items()}, assign=True)
    lat = (1, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    z = torch.randn(lat, generator=torch.Generator().manual_seed(0))
    tile = max(8, args.height // 8 // 2)
    runs = {
        "ours (untiled)": lambda: ours.decode(z),
        f"ours (tiled {tile * 8}px, overlap {tile * 2}px)": lambda: decode_tiled(ours, z, tile, tile // 4),
        "ComfyUI native": lambda: native.decode(z),
        "diffusers": lambda: diff.decode(z).sample,
    }
    res = {n: measure(f, runs=args.runs) for n, f in runs.items()}
    bt, bm = res["ours (untiled)"]
    print(f"\nWan2.1 VAE decode (real size, random weights, fp32, CPU {torch.get_num_threads()} threads): latent {lat} "
          f"-> {args.frames} frames {args.width}x{args.height}; median of {args.runs}; memory = peak RSS growth")
    print(table([[n, f"{t:.1f} s", gib(m), f"{t / bt:.2f}x", f"{m / max(bm, 1):.2f}x"] for n, (t, m) in res.items()],
                ["implementation", "decode", "peak mem", "time vs ours", "mem vs ours"]))


TE_PROBE = r"""
import json, sys, time
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/benchmarks", sys.argv[3] + "/tests"]
from common import status_bytes
before = status_bytes("VmRSS")
t0 = time.perf_counter()
if sys.argv[1] == "ours":
    from wan_core.text.loader import load_text_encoder
    enc = load_text_encoder(sys.argv[2])
    unique = {t.data_ptr(): t for t in enc.model.state_dict().values() if t is not None}  # shared = embed_tokens
    size = sum(t.numel() * t.element_size() for t in unique.values())
else:
    from references import comfy
    sd_mod, utils = comfy("comfy.sd"), comfy("comfy.utils")
    clip = sd_mod.load_text_encoder_state_dicts([utils.load_torch_file(sys.argv[2], safe_load=True)],
                                                 clip_type=sd_mod.CLIPType.WAN)
    size = clip.patcher.model_size()
print(json.dumps({"seconds": time.perf_counter() - t0, "peak": status_bytes("VmHWM") - before,
                  "resident": status_bytes("VmRSS") - before, "model": size}))
"""


def bench_text_encoder(args):
    from tiny_models.umt5 import spiece_tensor, train_spiece
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        path = os.path.join(d, "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
        g = torch.Generator().manual_seed(0)
        sd = {"shared.weight": (torch.randn(256384, 4096, generator=g) * 0.02).half(),
              "spiece_model": spiece_tensor(train_spiece()), "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
        for i in range(24):
            p = f"encoder.block.{i}.layer."
            shapes = {"0.SelfAttention.q": (4096, 4096), "0.SelfAttention.k": (4096, 4096),
                      "0.SelfAttention.v": (4096, 4096), "0.SelfAttention.o": (4096, 4096),
                      "1.DenseReluDense.wi_0": (10240, 4096), "1.DenseReluDense.wi_1": (10240, 4096),
                      "1.DenseReluDense.wo": (4096, 10240)}
            for name, shape in shapes.items():
                sd[f"{p}{name}.weight"] = torch.randn(shape, generator=g).to(torch.float8_e4m3fn)
                sd[f"{p}{name}.scale_weight"] = torch.tensor(0.01)
            sd[f"{p}0.SelfAttention.relative_attention_bias.weight"] = torch.randn(32, 64, generator=g)
            sd[f"{p}0.layer_norm.weight"] = torch.ones(4096).half()
            sd[f"{p}1.layer_norm.weight"] = torch.ones(4096).half()
        sd["encoder.final_layer_norm.weight"] = torch.ones(4096).half()
        save_file(sd, path)
        del sd
        rows = []
        for who in ("ours", "comfyui"):
            out = subprocess.run([sys.executable, "-c", TE_PROBE, who, path, common.ROOT], capture_output=True,
                                 text=True)
            if out.returncode != 0:
                rows.append([who, "failed", out.stderr.strip().splitlines()[-1][:80], "", ""])
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append([who, f"{r['seconds']:.1f} s", gib(r["model"]), gib(r["resident"]), gib(r["peak"])])
        print(f"\numt5-xxl text encoder from an fp8 scaled file of the real size ({gib(os.path.getsize(path))}, random "
              "weights), fresh process each")
        print(table(rows, ["loader", "load time", "model size", "resident after", "peak RSS growth"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--skip-text-encoder", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--tmp", default=None, help="folder for the 6.7 GB umt5 test file")
    args = ap.parse_args()
    if not args.skip_decode:
        with torch.no_grad():
            bench_decode(args)
    if not args.skip_text_encoder:
        bench_text_encoder(args)


if __name__ == "__main__":
    main()
