"""The longest video each model allows on a 24 GiB and an 80 GiB GPU, from the estimates the nodes use.

- DiT activations: ``nodes.host.dit_activation_bytes`` (ComfyUI's own ``memory_required`` for Wan, in
  its memory-efficient attention branch, cond + uncond batched), bf16 compute: what Wan Sampler checks
  before sampling;
- weights: the parameter count of the real configuration (built on the meta device) at the storage
  of the file users load (bf16 / fp16 safetensors; the A14B experts as Q4_K_M GGUF, about 4.8 bits per
  weight, one expert resident at a time);
- decode: ``wan_core.vae.memory.decode_bytes`` (bf16), which depends on the frame size only.

"resident" = activations + all weights fit (the fast path); "offloaded" = activations alone fit, with
ComfyUI streaming the weights (slower). Nothing is allocated: this is arithmetic over the estimates.

    python benchmarks/size_limits.py
"""

from __future__ import annotations

import common  # noqa: F401  (puts the repository on sys.path)
import torch

import comfy_inprocess as ci
from wan_core.dit.config import WanDiTConfig
from wan_core.dit.model import WanDiT
from wan_core.vae import WanVAEConfig
from wan_core.vae.memory import decode_bytes

GiB = 2**30
MODELS = [  # name, DiT config, VAE version, bytes per weight as stored, sizes (16:9 480p / 720p)
    ("Wan2.1-T2V-1.3B (bf16)", WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30), "2.1", 2.0,
     [(832, 480), (1280, 720)]),
    ("Wan2.2-TI2V-5B (bf16)", WanDiTConfig(in_channels=48, out_channels=48, dim=3072, ffn_dim=14336, num_heads=24,
                                           num_layers=30), "2.2", 2.0, [(832, 480), (1280, 704)]),
    ("Wan2.2-T2V-A14B (Q4_K_M, per expert)", WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
     "2.1", 4.8 / 8, [(832, 480), (1280, 720)]),
]
GPUS = (24, 80)
MAX_FRAMES = 1025  # Wan Video Size's limit


def estimate(cfg: WanDiTConfig, vae_version: str, weight_bytes: float, width: int, height: int) -> dict:
    """The memory a video of this model and frame size needs, by the estimates the nodes use:
    weights, activations(frames), decode, and the longest clip on each GPU (resident / offloaded)."""
    host = ci.pack_module("nodes.host")
    with torch.device("meta"):
        params = sum(p.numel() for p in WanDiT(cfg).parameters())
    weights = params * weight_bytes
    factor = cfg.dim / 2222  # core's WAN21_T2V / WAN22 memory_usage_factor
    vae = WanVAEConfig(vae_version)
    stride = vae.stride[1]

    def activations(frames):
        t = (frames - 1) // 4 + 1
        return host.dit_activation_bytes(factor, (1, cfg.in_channels, t, height // stride, width // stride),
                                         torch.bfloat16)

    def longest(budget):
        fits = [frames for frames in range(1, MAX_FRAMES + 1, 4) if activations(frames) <= budget]
        return fits[-1] if fits else None

    decode = decode_bytes(vae, (1, vae.z_dim, 1, height // stride, width // stride), torch.bfloat16)
    return {"weights": weights, "activations": activations, "decode": decode,
            "longest": {gpu: (longest(gpu * GiB - weights), longest(gpu * GiB)) for gpu in GPUS}}


def main():
    rows = []
    for name, cfg, vae_version, weight_bytes, sizes in MODELS:
        for w, h in sizes:
            e = estimate(cfg, vae_version, weight_bytes, w, h)
            cells = [c or "-" for gpu in GPUS for c in e["longest"][gpu]]
            rows.append((name, f"{w}x{h}", f"{e['weights'] / GiB:.1f}", f"{e['activations'](81) / GiB:.1f}",
                         f"{e['decode'] / GiB:.1f}", *cells))
    header = ("model", "size", "weights GiB", "DiT act. GiB @81 fr", "decode GiB", "24 GiB resident",
              "24 GiB offloaded", "80 GiB resident", "80 GiB offloaded")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(f"\n(largest frame count 4n+1 up to {MAX_FRAMES}; '-' = none)")


if __name__ == "__main__":
    main()
