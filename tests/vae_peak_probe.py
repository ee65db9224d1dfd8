"""Run as a script (in its own process): peak memory of the real-size Wan VAE decoder / encoder on
the CPU at several sizes, printed as JSON lines. Large allocations are memory-mapped
(MALLOC_MMAP_THRESHOLD_, set by the caller) so the resident size follows the live tensors, and the
high-water mark is reset (/proc/self/clear_refs) before each measurement.

    python tests/vae_peak_probe.py 2.1 decode:3:128:128 decode:3:256:256 encode:3:256:448 ...
"""

import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tiny_models.vae import random_vae_state  # noqa: E402
from wan_core.vae import WanVAE, WanVAEConfig  # noqa: E402


def status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def main():
    torch.set_num_threads(2)
    version, cases = sys.argv[1], sys.argv[2:]
    cfg = (WanVAEConfig("2.1", z_dim=16, dim=96, dec_dim=96) if version == "2.1"
           else WanVAEConfig("2.2", z_dim=48, dim=160, dec_dim=256))
    vae = WanVAE(cfg)
    vae.load_state_dict(random_vae_state(cfg, seed=0))
    vae.eval()
    s = cfg.stride
    with torch.no_grad():  # warm-up: the libraries' own workspaces are not the model's use
        vae.decode(torch.randn(1, cfg.z_dim, 2, 2, 2), sink=lambda f, i: None)
        vae.encode(torch.randn(1, 3, 5, 2 * s[1], 2 * s[2]))
        for case in cases:
            op, t, h, w = case.split(":")
            t, h, w = int(t), int(h), int(w)
            if op == "decode":
                x = torch.randn(1, cfg.z_dim, t, h // s[1], w // s[2])
            else:
                x = torch.randn(1, 3, 1 + 4 * (t - 1), h, w)
            base = status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            if op == "decode":
                vae.decode(x, sink=lambda frames, start: None)
            else:
                vae.encode(x)
            print(json.dumps({"op": op, "frames": t, "height": h, "width": w,
                              "peak": status("VmHWM") - base, "shape": list(x.shape)}), flush=True)


if __name__ == "__main__":
    main()
