"""DiT forward time and memory: ours vs ComfyUI's native WanModel vs diffusers, same weights.

Real Wan2.1-1.3B configuration with random weights (or --config tiny for a smoke run).  The
three models share one set of fp32 tensors (assigned, not copied), so RSS is comparable.
Also: load time and peak RSS of loading a 1.3B-size bf16 file, ours vs safetensors.load_file.

    python benchmarks/bench_dit.py --frames 9 --height 256 --width 256 --runs 3
    python benchmarks/bench_dit.py --frames 17 --height 480 --width 832 --runs 1 --warmup 0 --impls ours native
    python benchmarks/bench_dit.py --section compile      # torch.compile and core TorchCompileModel
    python benchmarks/bench_dit.py --device cuda --dtype bf16   # unchanged on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

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


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(cfg, sd, dtype=torch.float32):
    ours = WanDiT(cfg, compute_dtype=dtype).requires_grad_(False)
    ours.load_state_dict(sd, assign=True)
    wan, ops = comfy("comfy.ldm.wan.model"), comfy("comfy.ops")
    with torch.device("meta"):
        native = wan.WanModel(model_type="t2v", in_dim=16, dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=256,
                              text_dim=4096, out_dim=16, num_heads=cfg.num_heads, num_layers=cfg.num_layers,
                              cross_attn_norm=True, dtype=dtype, operations=ops.disable_weight_init)
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


def inputs(args, device, dtype):
    lat = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, *lat, generator=g).to(device, dtype)
    ctx = torch.randn(1, 512, 4096, generator=g).to(device, dtype)
    return lat, x, torch.tensor([700.0], device=device), ctx


def bench_forward(args):
    cfg = CONFIGS[args.config]
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    sd = random_dit_state(cfg, seed=0)
    ours, native, diff = build(cfg, sd, dtype)
    lat, x, t, ctx = inputs(args, device, dtype)
    runs = {
        "ours": ("ours (wan_core)", ours, lambda: ours(x, t, ctx)),
        "native": ("ComfyUI native", native, lambda: native(x, t, ctx)),
        "diffusers": ("diffusers", diff, lambda: diff(x, t, ctx, return_dict=False)[0]),
    }
    results = {}
    for key in args.impls:
        name, model, fn = runs[key]
        if device.type != "cpu" or dtype != torch.float32:
            model.to(device=device, dtype=dtype)  # as a file stored in that dtype
        results[name] = measure(fn, runs=args.runs, warmup=args.warmup, device=device)
        print(f"  {name}: {results[name][0]:.2f} s", flush=True)
    base_t, base_m = next(iter(results.values()))
    first = next(iter(results))
    rows = [[n, f"{s:.2f} s", gib(m), f"{s / base_t:.2f}x", f"{m / max(base_m, 1):.2f}x"] for n, (s, m) in results.items()]
    tokens = lat[0] * lat[1] // 2 * lat[2] // 2
    where = f"CPU {torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    print(f"\nDiT forward, {args.config} config (random weights, {args.dtype}, {where}), "
          f"{args.frames} frames {args.width}x{args.height} -> latent {lat}, {tokens} tokens, 512 text tokens; "
          f"median of {args.runs} after {args.warmup} warm-up; memory = peak growth during the forward")
    print(table(rows, ["implementation", "forward", "peak mem", f"time vs {first}", f"mem vs {first}"]))
    if device.type == "cpu" and dtype == torch.float32:
        bench_rates(args, results, tokens)
    return sd


def bench_compile(args):
    """torch.compile of wan_core's DiT, and core TorchCompileModel on our MODEL, against eager:
    compile time (first call minus an eager call) and the per-forward gain afterwards."""
    import comfy_inprocess as ci

    cfg = CONFIGS[args.config]
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    sd = random_dit_state(cfg, seed=0)
    lat, x, t, ctx = inputs(args, device, dtype)
    rows = []

    def timed(fn):  # one call, seconds
        return measure(fn, runs=1, device=device)[0]

    ours = WanDiT(cfg, compute_dtype=dtype).requires_grad_(False)
    ours.load_state_dict(sd, assign=True)
    ours.to(device=device, dtype=dtype)
    eager, _ = measure(lambda: ours(x, t, ctx), runs=args.runs, warmup=1, device=device)
    compiled = torch.compile(ours)
    first = timed(lambda: compiled(x, t, ctx))
    steady, _ = measure(lambda: compiled(x, t, ctx), runs=args.runs, device=device)
    rows.append(["wan_core WanDiT, torch.compile(model)", f"{eager:.2f} s", f"{steady:.2f} s", f"{steady / eager:.2f}x",
                 f"{first - steady:.0f} s"])
    print(f"  torch.compile: eager {eager:.2f} s, compiled {steady:.2f} s, first call {first:.0f} s", flush=True)
    del compiled
    torch._dynamo.reset()

    ci.pack()
    import comfy.model_management as mm
    import nodes as core

    adapter, core_model = ci.pack_module("nodes.model_adapter"), ci.pack_module("nodes.core_model")
    dit = adapter.ComfyWanDiT(cfg, compute_dtype=dtype).requires_grad_(False)
    dit.load_state_dict(sd, assign=True)
    dit.to(device=device, dtype=dtype)
    model = ci.run_node("ModelSamplingSD3", model=core_model.wrap_dit(dit, device, device), shift=5.0)[0]
    cond = [[ctx.float().cpu(), {}]]
    latent = {"samples": torch.zeros(1, 16, *lat)}

    def sample(m):  # KSampler, guidance 1: one DiT forward per step
        return core.common_ksampler(m, 0, args.compile_steps, 1.0, "euler", "simple", cond, cond, latent)

    per = lambda seconds: seconds / args.compile_steps  # noqa: E731
    with torch.inference_mode():
        sample(model)
        eager = per(timed(lambda: sample(model)))
        patched = ci.run_node("TorchCompileModel", model=model, backend="inductor")[0]
        mm.unload_all_models()
        first = timed(lambda: sample(patched))
        steady = per(timed(lambda: sample(patched)))
    rows.append([f"our MODEL + core TorchCompileModel (KSampler, {args.compile_steps} steps)", f"{eager:.2f} s",
                 f"{steady:.2f} s", f"{steady / eager:.2f}x", f"{first - args.compile_steps * steady:.0f} s"])
    where = f"CPU {torch.get_num_threads()} threads, inductor" if device.type == "cpu" else f"{device}, inductor"
    print(f"\nCompiled DiT, {args.config} config, {args.dtype}, {where}, {lat} latent (after the first call; "
          f"compile time = first call minus a compiled call)")
    print(table(rows, ["path", "eager forward", "compiled forward", "compiled vs eager", "compile time"]))


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
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--impls", nargs="+", default=["ours", "native", "diffusers"], choices=["ours", "native", "diffusers"])
    ap.add_argument("--section", default="forward", choices=["forward", "compile"])
    ap.add_argument("--compile-steps", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--sdpa-tokens", type=int, nargs="*", default=[],
                    help="also time SDPA alone at these token counts (e.g. 7800 32760)")
    args = ap.parse_args()
    if args.section == "compile":
        return bench_compile(args)
    sd = bench_forward(args)
    if not args.skip_load:
        bench_load(args.config, sd)


if __name__ == "__main__":
    main()
