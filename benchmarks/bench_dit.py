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


def forward_flops(cfg, tokens: int, text: int = 512, text_kv: bool = True) -> dict:
    """Multiply-add FLOPs (2 per MAC) of one DiT forward, by kind. ``text_kv``: the cross-attention
    keys/values of the text are computed (False when they are reused across steps)."""
    d, f, n = cfg.dim, cfg.ffn_dim, cfg.num_layers
    linear = n * (2 * tokens * d * d * 4 + 2 * tokens * d * d * 2 + 2 * tokens * d * f * 2)
    if text_kv:
        linear += n * 2 * text * d * d * 2
    attention = n * (4 * tokens * tokens * d + 4 * tokens * text * d)
    return {"linear": linear, "attention": attention, "total": linear + attention}


def matmul_rate(tokens: int, d: int, runs: int = 3) -> float:
    """Measured fp32 GFLOP/s of a [tokens, d] x [d, d] matmul on this machine."""
    a, b = torch.randn(tokens, d), torch.randn(d, d)
    t, _ = measure(lambda: a @ b, runs=runs, warmup=1)
    return 2 * tokens * d * d / t / 1e9


def sdpa_rate(tokens: int, heads: int, runs: int = 2) -> float:
    """Measured fp32 GFLOP/s of PyTorch SDPA on [1, heads, tokens, 128]."""
    q = torch.randn(1, heads, tokens, 128)
    t, _ = measure(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q), runs=runs, warmup=1)
    return 4 * tokens * tokens * heads * 128 / t / 1e9


def bench_rates(args, results, tokens):
    """Achieved FLOP rate of each forward against the measured matmul and SDPA rates; the attention
    share of the work at 768, 7,800 and 32,760 video tokens (9 frames 256x256, 17 frames 480p,
    81 frames 720p)."""
    cfg = CONFIGS[args.config]
    mm_rate = matmul_rate(tokens, cfg.dim)
    att_rate = sdpa_rate(tokens, cfg.num_heads)
    flops = forward_flops(cfg, tokens)
    rows = [[name, f"{flops['total'] / t / 1e9:.1f}", f"{flops['total'] / t / 1e9 / mm_rate:.0%}"]
            for name, (t, _) in results.items()]
    print(f"\nAchieved rate at {tokens} tokens ({flops['total'] / 1e12:.2f} TFLOP per forward, attention "
          f"{flops['attention'] / flops['total']:.0%}); this machine: fp32 matmul [{tokens}x{cfg.dim}]x[{cfg.dim}x"
          f"{cfg.dim}] {mm_rate:.1f} GFLOP/s, SDPA ({cfg.num_heads} heads x 128) {att_rate:.1f} GFLOP/s")
    print(table(rows, ["implementation", "GFLOP/s", "of matmul rate"]))
    share = []
    for n_tok, what in ((768, "9 frames 256x256"), (7800, "17 frames 832x480"), (32760, "81 frames 832x480")):
        fl = forward_flops(cfg, n_tok)
        share.append([n_tok, what, f"{fl['total'] / 1e12:.2f}", f"{fl['attention'] / fl['total']:.0%}",
                      f"{fl['total'] / forward_flops(cfg, 768)['total']:.1f}x"])
    if args.sdpa_tokens:
        for n_tok in args.sdpa_tokens:
            share.append([n_tok, "measured SDPA rate", "", f"{sdpa_rate(n_tok, cfg.num_heads, runs=1):.1f} GFLOP/s", ""])
    print(f"\nWork per forward by length ({args.config} config, 512 text tokens, text K/V computed)")
    print(table(share, ["video tokens", "clip", "TFLOP", "attention share", "vs 768 tokens"]))


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
    bench_rates(args, results, tokens)
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
    ap.add_argument("--sdpa-tokens", type=int, nargs="*", default=[],
                    help="also time SDPA alone at these token counts (e.g. 7800 32760)")
    args = ap.parse_args()
    sd = bench_forward(args)
    if not args.skip_load:
        bench_load(args.config, sd)


if __name__ == "__main__":
    main()
