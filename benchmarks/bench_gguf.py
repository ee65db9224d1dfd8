"""GGUF: dequantization throughput per type (ours in torch vs gguf.quants in numpy), and the DiT at
the real 1.3B configuration with Q8_0 and Q4_K weights vs bf16 weights: forward time and resident
memory after loading (each in a fresh process).

    python benchmarks/bench_gguf.py [--rows 4096 --cols 4096] [--frames 9 --height 256 --width 256]
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

import common  # noqa: F401
import numpy as np
import torch

import gguf
from common import gib, table
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from tiny_models.gguf_files import QUANTIZABLE, random_blocks, write_wan_gguf
from wan_core.gguf.dequant import dequantize

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS]


def _median_time(fn, runs=3):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_dequant(rows, cols):
    out_rows = []
    shape = (rows, cols)
    gb = rows * cols * 4 / 1e9
    for qt in TYPES:
        if qt in QUANTIZABLE:
            raw = gguf.quants.quantize(np.random.default_rng(0).standard_normal(shape).astype(np.float32), qt)
        else:
            raw = random_blocks(qt, shape, seed=0)
        raw_t = torch.from_numpy(raw)
        ours = _median_time(lambda: dequantize(raw_t, qt, shape, torch.float32))
        ref = _median_time(lambda: gguf.quants.dequantize(raw, qt), runs=1)
        bpw = GGML_QUANT_SIZES[qt][1] * 8 / GGML_QUANT_SIZES[qt][0]
        out_rows.append([qt.name, f"{bpw:.2f}", f"{gb / ours:.2f}", f"{gb / ref:.2f}", f"{ref / ours:.1f}x"])
    print(f"\nDequantization of a {rows}x{cols} tensor to fp32 (CPU, {torch.get_num_threads()} threads), "
          "GB of output per second, median of 3 (numpy: 1 run)")
    print(table(out_rows, ["type", "bits/weight", "ours (torch) GB/s", "gguf.quants (numpy) GB/s", "ours / numpy"]))


PROBE = r"""
import json, statistics, sys, time
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/benchmarks"]
import torch
from common import status_bytes
from wan_core import load_dit
before = status_bytes("VmRSS")
m = load_dit(sys.argv[1])
resident = status_bytes("VmRSS") - before
f, h, w = (int(v) for v in sys.argv[3:6])
x = torch.randn(1, 16, (f - 1) // 4 + 1, h // 8, w // 8)
t, ctx = torch.tensor([700.0]), torch.randn(1, 512, 4096)
times = []
with torch.no_grad():
    for i in range(int(sys.argv[6]) + 1):
        t0 = time.perf_counter(); m(x, t, ctx); times.append(time.perf_counter() - t0)
print(json.dumps({"resident": resident, "forward": statistics.median(times[1:]),
                  "resident_after_forward": status_bytes("VmRSS") - before,
                  "weights": sum(p.numel() * p.element_size() for p in m.parameters())}))
"""


def bench_dit(args):
    from safetensors.torch import save_file

    from bench_dit import CONFIGS
    from tiny_models.dit import random_dit_state

    cfg = CONFIGS[args.config]
    sd = random_dit_state(cfg, seed=0)
    big = lambda name, t: t.dim() == 2 and name.startswith("blocks.")  # noqa: E731
    with tempfile.TemporaryDirectory() as d:
        files = {"bf16 safetensors": os.path.join(d, "dit_bf16.safetensors")}
        save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, files["bf16 safetensors"])
        for qt in (T.Q8_0, T.Q4_K):
            path = os.path.join(d, f"dit_{qt.name}.gguf")
            write_wan_gguf(sd, path, {k: qt for k, v in sd.items() if big(k, v)})
            files[f"{qt.name} GGUF"] = path
        del sd
        rows, base = [], None
        for name, path in files.items():
            out = subprocess.run([sys.executable, "-c", PROBE, path, common.ROOT, str(args.frames), str(args.height),
                                  str(args.width), str(args.runs)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            base = base or r
            rows.append([name, gib(os.path.getsize(path)), gib(r["weights"]), gib(r["resident"]),
                         gib(r["resident_after_forward"]), f"{r['forward']:.2f} s", f"{r['forward'] / base['forward']:.2f}x"])
    print(f"\nDiT at the {args.config} configuration (random weights; blocks' matrices quantized), fp32 compute on "
          f"the CPU, {args.frames} frames {args.width}x{args.height}; forward = median of {args.runs} after a warm-up")
    print("(GGUF tensors are zero-copy views of the mapped file: pages become resident on first use, so RSS after "
          "the forwards is the meaningful number; it includes the activations)")
    print(table(rows, ["weights", "file", "weights in memory", "RSS after load", "RSS after forwards", "forward",
                       "vs bf16"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--config", default="1.3B")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--skip-dit", action="store_true")
    args = ap.parse_args()
    bench_dequant(args.rows, args.cols)
    if not args.skip_dit:
        bench_dit(args)


if __name__ == "__main__":
    main()
