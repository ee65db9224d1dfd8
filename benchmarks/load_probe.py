"""Load one DiT file in this (fresh) process and print JSON: model bytes, peak RSS growth, seconds.

Used by ``bench_dit.py`` and by the loading-memory test; run as
``python benchmarks/load_probe.py FILE [--weight-dtype bf16]``.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from common import status_bytes  # noqa: E402
from wan_core import load_dit  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}


def rss_bytes() -> int:
    return status_bytes("VmRSS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--weight-dtype", choices=sorted(DTYPES))
    args = ap.parse_args()
    before = rss_bytes()
    t0 = time.perf_counter()
    model = load_dit(args.file, weight_dtype=DTYPES.get(args.weight_dtype))
    seconds = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: the latter inherits the forking parent's peak across exec.
    peak = status_bytes("VmHWM")
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(json.dumps({"model_bytes": size, "peak_growth": peak - before, "rss_after": rss_bytes() - before,
                      "seconds": seconds, "family": model.config.family}))


if __name__ == "__main__":
    main()
