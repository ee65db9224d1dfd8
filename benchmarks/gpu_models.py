"""The files the GPU acceptance run measures, written where it runs (random weights, real layouts).

Real sizes where a row's memory or speed depends on them: the Wan2.1 1.3B DiT in bf16, the
TI2V-5B DiT in bf16, the Wan2.2 VAE, and A14B-width GGUF Q4_K experts (dim 5120, FFN 13824, 40
heads) with as few blocks as keep a row honest, each with a rank-64 LoRA in lightx2v's layout.
The weights are drawn on the GPU when there is one. ``smoke``: tiny models of the same layouts.
Each file is written once per folder; a row asks only for the files it uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import common  # noqa: F401  (paths)
from tiny_models.dit import TINY_T2V, TINY_TI2V, random_dit_state
from wan_core.dit.config import WanDiTConfig

DIT13 = "wan2.1_t2v_1.3B_bf16.safetensors"
DIT5B = "wan2.2_ti2v_5B_bf16.safetensors"
VAE22 = "wan2.2_vae.safetensors"
EXPERTS = ("Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf", "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf")
LORAS = ("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
         "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors")
A14B_BLOCKS = 4  # of 40: enough for the experts to outgrow the constrained budget and to time a block

CONFIGS = {
    "1.3B": WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "5B": WanDiTConfig(in_channels=48, out_channels=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30),
    "A14B": WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=A14B_BLOCKS),
}
SMOKE_CONFIGS = {"1.3B": TINY_T2V, "5B": TINY_TI2V, "A14B": TINY_T2V}


def _save(sd: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    save_file({f"model.diffusion_model.{k}": v for k, v in sd.items()}, str(tmp))
    os.replace(tmp, path)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def dit_file(root: Path, which: str, smoke: bool) -> Path:
    """The 1.3B or 5B DiT in bf16 (ComfyUI's key names)."""
    path = root / "diffusion_models" / (DIT13 if which == "1.3B" else DIT5B)
    if not path.exists():
        cfg = (SMOKE_CONFIGS if smoke else CONFIGS)[which]
        print(f"writing {path.name} ({which}, bf16, random weights) ...", flush=True)
        _save(random_dit_state(cfg, seed=0 if which == "1.3B" else 5, device=_device(), dtype=torch.bfloat16), path)
    return path


def a14b_files(root: Path, smoke: bool):
    """(expert paths, LoRA names): the GGUF Q4_K pair and a rank-64 LoRA per expert."""
    from safetensors.torch import save_file

    from tiny_models.gguf_files import write_real_size_wan_gguf
    from tiny_models.loras import lora_state

    cfg = (SMOKE_CONFIGS if smoke else CONFIGS)["A14B"]
    paths = [root / "diffusion_models" / name for name in EXPERTS]
    for i, path in enumerate(paths):
        if not path.exists():
            print(f"writing {path.name} ({cfg.num_layers} A14B-width blocks, GGUF Q4_K) ...", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_real_size_wan_gguf(cfg, path.with_suffix(".partial"), seed=i + 1)
            os.replace(path.with_suffix(".partial"), path)
    for i, name in enumerate(LORAS):
        path = root / "loras" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            lora = lora_state(cfg, "lightx2v", rank=64, seed=20 + i)
            save_file({k: v.to(torch.bfloat16) for k, v in lora.items()}, str(path))
    return paths, [root / "loras" / name for name in LORAS]


def vae22_file(root: Path, smoke: bool) -> Path:
    """The Wan2.2 VAE at its real size (core's loader builds it at that size, smoke run included)."""
    from safetensors.torch import save_file

    from tiny_models.vae import random_vae_state
    from wan_core.vae import WanVAEConfig

    path = root / "vae" / VAE22
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = WanVAEConfig("2.2", z_dim=48, dim=160, dec_dim=256)
        save_file(random_vae_state(cfg, seed=6), str(path))
    return path
