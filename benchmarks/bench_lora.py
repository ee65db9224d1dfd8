"""LoRA cost on the Wan MODEL: ours vs core's LoRA on ComfyUI's native Wan model, same files.

1. Applying a rank-64 lightx2v-style LoRA (every block linear, diff_b biases, norm diffs) to the
   1.3B configuration on load (bf16 file): load + patch time and peak RSS, each run in a fresh
   process, ours (Wan Load DiT's loader) vs native (core's diffusion-model loader keeping bf16),
   both patched by core's ``load_lora_for_models`` and merged by ``load_models_gpu``.
2. Per forward: our GGUF model keeps its blocks quantized and applies the LoRA per call to the
   dequantized weight; the overhead against the same GGUF without LoRA, next to the merged bf16
   models (ours and native), whose LoRA costs nothing per forward once merged.

Random weights; the numbers are costs only. Run with the project's venv and COMFYUI_PATH set
(``source ~/.cache/wan-video-pack/env.sh``):

    python benchmarks/bench_lora.py                      # 1.3B config, 9 frames 256x256 (768 tokens)
    python benchmarks/bench_lora.py --frames 5 --height 128 --width 128 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import common  # noqa: F401  (sets sys.path)
import torch

from common import gib, status_bytes, table

DEVICE_NOTE = "CPU" if not torch.cuda.is_available() else torch.cuda.get_device_name()


def probe(args):
    """In a fresh process: load (+ LoRA) (+ forwards) and print JSON."""
    import comfy_inprocess as ci

    ci.host()
    import comfy.model_management as mm
    import comfy.sd
    import comfy.utils

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    base = status_bytes("VmRSS")
    t0 = time.perf_counter()
    if args.probe == "ours":
        model = ci.pack_module("nodes.loaders").load_wan_model(args.model)
    else:
        model = comfy.sd.load_diffusion_model(args.model, model_options={"dtype": torch.bfloat16})
    loaded = time.perf_counter()
    if args.lora:
        lora = comfy.utils.load_torch_file(args.lora, safe_load=True)
        model = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0]
    mm.load_models_gpu([model])
    done = time.perf_counter()
    peak = status_bytes("VmHWM") - base
    out = {"load_s": loaded - t0, "patch_s": done - loaded, "peak": peak, "rss": status_bytes("VmRSS") - base,
           "model_bytes": model.model_size()}
    if args.forwards:
        g = torch.Generator().manual_seed(0)
        lat = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
        x = torch.randn(1, 16, *lat, generator=g)
        ctx = torch.randn(1, 512, 4096, generator=g)
        sigma = torch.tensor([0.7])
        times = []
        with torch.no_grad():
            model.model.apply_model(x, sigma, c_crossattn=ctx)  # warm-up
            for _ in range(args.forwards):
                t1 = time.perf_counter()
                model.model.apply_model(x, sigma, c_crossattn=ctx)
                times.append(time.perf_counter() - t1)
        out["forward_s"] = statistics.median(times)
        out["rss"] = status_bytes("VmRSS") - base  # after the forwards: GGUF pages are mapped in on first use
    print(json.dumps(out))


def run_probe(impl, model, lora=None, forwards=0, args=None):
    cmd = [sys.executable, __file__, "--probe", impl, "--model", model]
    if lora:
        cmd += ["--lora", lora]
    if forwards:
        cmd += ["--forwards", str(forwards), "--frames", str(args.frames), "--height", str(args.height),
                "--width", str(args.width)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_files(folder, cfg):
    from safetensors.torch import save_file
    from gguf import GGMLQuantizationType as T

    from tiny_models.gguf_files import write_wan_gguf
    from tiny_models.loras import lora_state
    from tiny_models.dit import random_dit_state

    sd = random_dit_state(cfg, seed=0)
    bf16 = os.path.join(folder, "wan2.1_t2v_1.3B_bf16.safetensors")
    save_file({f"model.diffusion_model.{k}": v.to(torch.bfloat16) for k, v in sd.items()}, bf16)
    gguf = os.path.join(folder, "wan2.1_t2v_1.3B-Q4_K.gguf")
    write_wan_gguf(sd, gguf, {k: T.Q4_K for k, v in sd.items() if v.dim() == 2 and k.startswith("blocks.")})
    del sd
    lora = os.path.join(folder, "lightx2v_style_rank64.safetensors")
    save_file(lora_state(cfg, "lightx2v", rank=64, seed=1), lora)
    return bf16, gguf, lora


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", choices=["ours", "native"])
    ap.add_argument("--model")
    ap.add_argument("--lora")
    ap.add_argument("--forwards", type=int, default=0)
    ap.add_argument("--config", choices=["1.3B", "tiny"], default="1.3B")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--runs", type=int, default=2, help="forwards timed per model (median), after a warm-up")
    ap.add_argument("--tmp", default=None, help="folder for the generated files (default: a temp dir)")
    args = ap.parse_args()
    if args.probe:
        return probe(args)

    from bench_dit import CONFIGS

    cfg = CONFIGS[args.config]
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        bf16, gguf, lora = write_files(d, cfg)
        print(f"files: bf16 {gib(os.path.getsize(bf16))}, GGUF Q4_K {gib(os.path.getsize(gguf))}, "
              f"LoRA rank 64 {os.path.getsize(lora) / 2**20:.0f} MiB")
        rows = []
        res = {}
        for impl in ("ours", "native"):
            for with_lora in (False, True):
                r = run_probe(impl, bf16, lora if with_lora else None)
                res[(impl, with_lora)] = r
        for impl in ("ours", "native"):
            plain, patched = res[(impl, False)], res[(impl, True)]
            n_plain, n_patched = res[("native", False)], res[("native", True)]
            total = patched["load_s"] + patched["patch_s"]
            lora_cost = total - (plain["load_s"] + plain["patch_s"])
            n_cost = (n_patched["load_s"] + n_patched["patch_s"]) - (n_plain["load_s"] + n_plain["patch_s"])
            rows.append([impl, f"{plain['load_s'] + plain['patch_s']:.2f} s", f"{total:.2f} s", f"{lora_cost:.2f} s",
                         gib(plain["peak"]), gib(patched["peak"]),
                         f"{total / (n_patched['load_s'] + n_patched['patch_s']):.2f}x",
                         f"{patched['peak'] / n_patched['peak']:.2f}x", f"{lora_cost / n_cost:.2f}x"])
        print(f"\nLoad + rank-64 LoRA, {args.config} config bf16 file, fresh process each, {DEVICE_NOTE} "
              f"{torch.get_num_threads()} threads (peak = RSS growth)")
        print(table(rows, ["model", "load", "load + LoRA", "LoRA cost", "peak", "peak + LoRA",
                           "time vs native", "peak vs native", "LoRA cost vs native"]))

        fwd = {}
        for name, impl, path, with_lora in (("ours GGUF Q4_K", "ours", gguf, False),
                                            ("ours GGUF Q4_K + LoRA (per call)", "ours", gguf, True),
                                            ("ours bf16 + LoRA (merged)", "ours", bf16, True),
                                            ("native bf16 + LoRA (merged)", "native", bf16, True)):
            fwd[name] = run_probe(impl, path, lora if with_lora else None, forwards=args.runs, args=args)
        base = fwd["ours GGUF Q4_K"]["forward_s"]
        nat = fwd["native bf16 + LoRA (merged)"]["forward_s"]
        lat = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
        rows = [[n, f"{r['forward_s']:.2f} s", gib(r["model_bytes"]), gib(r["rss"]), f"{r['forward_s'] / base:.2f}x",
                 f"{r['forward_s'] / nat:.2f}x"] for n, r in fwd.items()]
        tokens = lat[0] * (lat[1] // 2) * (lat[2] // 2)
        print(f"\nForward, {args.frames} frames {args.width}x{args.height} ({tokens} video tokens, 512 text), "
              f"fp32 compute, median of {args.runs} after a warm-up; model = weights held; RSS after the forwards")
        print(table(rows, ["model", "forward", "model", "RSS after", "vs GGUF no LoRA", "vs native + LoRA"]))


if __name__ == "__main__":
    main()
