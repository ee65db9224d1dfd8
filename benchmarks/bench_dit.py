"""DiT forward time and memory: ours vs ComfyUI's native WanModel vs diffusers, same weights.

Real Wan2.1-1.3B configuration with random weights (or --config tiny for a smoke run).  The
three models share one set of fp32 tensors (assigned, not copied), so RSS is comparable.
Also: load time and peak RSS of loading a 1.3B-size bf16 file, ours vs safetensors.load_file.

    python benchmarks/bench_dit.py --frames 9 --height 256 --width 256 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import common  # noqa: F401  (sets sys.path)
import torch

from common import gib, measure, table
from references import comfy
from tiny_models.dit import random_dit_state
from wan_core import WanDiT, WanDiTConfig
from wan_core.dit.keymap import official_to_diffusers

CONFIGS = {
    "1.3B": WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "tiny": WanDiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2),
}


def build(cfg, sd):
    ours = WanDiT(cfg).requires_grad_(False)
    ours.load_state_dict(sd, assign=True)
    wan, ops = comfy("comfy.ldm.wan.model"), comfy("comfy.ops")
    with torch.device("meta"):
        native = wan.WanModel(model_type="t2v", in_dim=16, dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=256,
                              text_dim=4096, out_dim=16, num_heads=cfg.num_heads, num_layers=cfg.num_layers,
                              cross_attn_norm=True, dtype=torch.float32, operations=ops.disable_weight_init)
    native.load_state_dict(sd, assign=True)
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        diff = WanTransformer3DModel(num_attention_heads=cfg.num_heads, attention_head_dim=128, in_channels=16,
                                     out_channels=16, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers,
                                     cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    diff.load_state_dict({official_to_diffusers(k): v for k, v in sd.items()}, assign=True)
    # diffusers computes its rope tables at construction: rebuild them off the meta device
    diff.rope = type(diff.rope)(128, (1, 2, 2), 1024)
    return ours.eval(), native.eval(), diff.eval()


def bench_forward(args):
    cfg = CONFIGS[args.config]
    torch.manual_seed(0)
    sd = random_dit_state(cfg, seed=0)
    ours, native, diff = build(cfg, sd)
    lat = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    x = torch.randn(1, 16, *lat)
    t = torch.tensor([700.0])
    ctx = torch.randn(1, 512, 4096)
    runs = {
        "ours (wan_core)": lambda: ours(x, t, ctx),
        "ComfyUI native": lambda: native(x, t, ctx),
        "diffusers": lambda: diff(x, t, ctx, return_dict=False)[0],
    }
    results = {name: measure(fn, runs=args.runs, warmup=1) for name, fn in runs.items()}
    base_t, base_m = results["ours (wan_core)"]
    rows = [[n, f"{s:.2f} s", gib(m), f"{s / base_t:.2f}x", f"{m / max(base_m, 1):.2f}x"] for n, (s, m) in results.items()]
    tokens = lat[0] * lat[1] // 2 * lat[2] // 2
    print(f"\nDiT forward, {args.config} config (random weights, fp32, CPU {torch.get_num_threads()} threads), "
          f"{args.frames} frames {args.width}x{args.height} -> latent {lat}, {tokens} tokens, 512 text tokens; "
          f"median of {args.runs} after 1 warm-up; memory = peak RSS growth during the forward")
    print(table(rows, ["implementation", "forward", "peak mem", "time vs ours", "mem vs ours"]))
    return sd


def bench_load(cfg_name, sd):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "wan_dit_bf16.safetensors")
        from safetensors.torch import save_file

        save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, path)
        probe = os.path.join(os.path.dirname(__file__), "load_probe.py")
        ref = os.path.join(os.path.dirname(__file__), "load_reference_probe.py")
        rows = []
        for name, cmd in [("ours: load_dit (keeps bf16)", [probe, path]),
                          ("ours: load_dit -> fp8", [probe, path, "--weight-dtype", "fp8"]),
                          ("load_file + load_state_dict (copy)", [ref, path])]:
            r = json.loads(subprocess.run([sys.executable, *cmd], capture_output=True, text=True,
                                          check=True).stdout.strip().splitlines()[-1])
            rows.append([name, f"{r['seconds']:.2f} s", gib(r["model_bytes"]), gib(r["peak_growth"]),
                         f"{r['peak_growth'] / r['model_bytes']:.2f}x"])
        print(f"\nLoading a {cfg_name}-size bf16 file ({gib(os.path.getsize(path))}), fresh process each "
              "(page cache warm)")
        print(table(rows, ["loader", "time", "loaded size", "peak RSS growth", "peak / loaded"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="1.3B")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    sd = bench_forward(args)
    if not args.skip_load:
        bench_load(args.config, sd)


if __name__ == "__main__":
    main()
