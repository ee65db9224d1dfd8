"""VAE decode / encode time and peak memory: ours (untiled and tiled) against ComfyUI's native Wan
VAEs (and optionally diffusers'), real-size Wan2.1 and Wan2.2 VAEs with the same random weights.
Every implementation runs in its own process, so each peak is its own; the script also prints the
largest difference between our output and native's.  Plus umt5-xxl loading memory from an
fp8-scaled file of the real size (``--text-encoder``).

    python benchmarks/bench_vae.py                                   # 9 frames 256x256, both VAEs
    python benchmarks/bench_vae.py --frames 17 --height 480 --width 832 --versions 2.1
    python benchmarks/bench_vae.py --device cuda --dtype bf16        # unchanged on a GPU
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

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def config(version):
    from wan_core.vae import WanVAEConfig

    if version == "2.1":
        return WanVAEConfig("2.1", z_dim=16, dim=96, dec_dim=96)
    return WanVAEConfig("2.2", z_dim=48, dim=160, dec_dim=256)


def build(impl, cfg):
    """(decode, encode) callables of one implementation with the seeded random weights."""
    from references import comfy_wan_vae, diffusers_wan_vae
    from tiny_models.vae import random_vae_state
    from wan_core.vae import WanVAE, decode_tiled

    sd = random_vae_state(cfg, seed=0)
    if impl.startswith("ours"):
        m = WanVAE(cfg).requires_grad_(False)
        m.load_state_dict(sd, assign=True)
        if impl.startswith("ours-tiled"):
            tile, overlap = (int(v) for v in impl.split(":")[1:])
            s = cfg.stride[1]
            return m, (lambda z: decode_tiled(m, z, max(1, tile // s), overlap // s)), m.encode
        return m, m.decode, m.encode
    if impl == "native":
        m = comfy_wan_vae(cfg, sd, assign=True)
        return m, (lambda z: m.decode(z).clamp(-1, 1)), m.encode
    if impl == "diffusers":
        m = diffusers_wan_vae(cfg, sd, assign=True)
        return m, (lambda z: m.decode(z).sample.clamp(-1, 1)), (lambda v: m.encode(v).latent_dist.mean)
    raise SystemExit(f"unknown implementation {impl!r}")


def child(args):
    """One implementation, one operation, in this process; prints a JSON line."""
    cfg = config(args.version)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    model, decode, encode = build(args.child, cfg)
    model.to(device=device, dtype=dtype)
    st, ss, _ = cfg.stride
    g = torch.Generator().manual_seed(0)
    if args.op == "decode":
        x = torch.randn(1, cfg.z_dim, (args.frames - 1) // st + 1, args.height // ss, args.width // ss, generator=g)
        fn = decode
    else:
        x = torch.rand(1, 3, args.frames, args.height, args.width, generator=g) * 2 - 1
        fn = encode
    x = x.to(device=device, dtype=dtype)
    with torch.inference_mode():  # as ComfyUI runs its nodes
        seconds, peak, out = measure(lambda: fn(x), runs=args.runs, device=device, keep=True)
    if args.save:
        from safetensors.torch import save_file

        save_file({"out": out.float().cpu().contiguous()}, args.save)
    print(json.dumps({"seconds": seconds, "peak": peak}))


def run_child(args, impl, version, op, save=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--version", version, "--op", op,
           "--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width),
           "--runs", str(args.runs), "--device", args.device, "--dtype", args.dtype]
    if save:
        cmd += ["--save", save]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{impl} {op} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def max_diff(a, b):
    from safetensors.torch import load_file

    return (load_file(a)["out"] - load_file(b)["out"]).abs().max().item()


def bench(args):
    header = (f"{args.frames} frames {args.width}x{args.height}, real-size VAEs, random weights, {args.dtype} on "
              f"{args.device}" + (f" ({torch.get_num_threads()} threads)" if args.device == "cpu" else "")
              + f", each implementation in its own process, median of {args.runs}; peak = "
              + ("peak allocated growth" if args.device == "cuda" else "peak RSS growth during the call"))
    print(header, flush=True)
    tiled = [f"ours-tiled:{t}" for t in args.tiles]
    with tempfile.TemporaryDirectory() as tmp:
        for version in args.versions:
            for op in args.ops:
                impls = ["native", "ours"] + (tiled if op == "decode" else []) + (["diffusers"] * args.diffusers)
                res, files = {}, {}
                for impl in impls:
                    files[impl] = os.path.join(tmp, f"{version}-{op}-{impl.replace(':', '_')}.safetensors")
                    res[impl] = run_child(args, impl, version, op, files[impl] if args.check else None)
                    print(f"  {version} {op} {impl}: {res[impl]['seconds']:.1f} s", flush=True)
                nt, nm = res["native"]["seconds"], res["native"]["peak"]
                rows = []
                for impl, r in res.items():
                    name = impl if not impl.startswith("ours-tiled") else "ours tiled {}px, overlap {}px".format(
                        *impl.split(":")[1:])
                    diff = f"{max_diff(files[impl], files['native']):.1e}" if args.check and impl != "native" else ""
                    rows.append([name, f"{r['seconds']:.1f} s", gib(r["peak"]), f"{r['seconds'] / nt:.2f}x",
                                 f"{r['peak'] / max(nm, 1):.2f}x", diff])
                print(f"\nWan{version} VAE {op}")
                print(table(rows, ["implementation", op, "peak", "time vs native", "peak vs native",
                                   "max |out - native|"]), flush=True)


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
    from tiny_models.umt5 import write_real_size_umt5

    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        path = os.path.join(d, "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
        write_real_size_umt5(path)
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
    ap.add_argument("--versions", nargs="+", default=["2.1", "2.2"], choices=["2.1", "2.2"])
    ap.add_argument("--ops", nargs="+", default=["decode", "encode"], choices=["decode", "encode"])
    ap.add_argument("--tiles", nargs="*", default=["256:64"],
                    help="tiled decodes to time, as TILE:OVERLAP in pixels (the decode node's default: 256:64)")
    ap.add_argument("--diffusers", action="store_true", help="also time diffusers' AutoencoderKLWan")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the output comparison")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--text-encoder", action="store_true", help="also measure umt5-xxl loading (6.7 GB file)")
    ap.add_argument("--tmp", default=None, help="folder for the 6.7 GB umt5 test file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--version", help=argparse.SUPPRESS)
    ap.add_argument("--op", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.ops:
        bench(args)
    if args.text_encoder:
        bench_text_encoder(args)


if __name__ == "__main__":
    main()
