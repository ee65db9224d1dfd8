"""Tiny Wan DiT configurations with random weights, and writers for the real file layouts."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from wan_core import WanDiT, WanDiTConfig
from wan_core.dit.keymap import official_to_diffusers

# head_dim 128 and text_dim 4096 as in every real model; everything else small.
TINY_T2V = WanDiTConfig(in_channels=16, out_channels=16, dim=256, ffn_dim=512, num_heads=2, num_layers=2)
TINY_TI2V = WanDiTConfig(in_channels=48, out_channels=48, dim=256, ffn_dim=384, num_heads=2, num_layers=2)


def random_dit_state(cfg: WanDiTConfig, seed: int = 0, device=None, dtype=None) -> dict:
    """Official-named state dict with weights at a scale where every path matters: fp32 on the CPU,
    or made on ``device`` (a GPU makes a real-size model in seconds) and stored in ``dtype`` on the
    CPU (modulation stays fp32, as in the real files)."""
    device = torch.device(device or "cpu")
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        shapes = {name: p.shape for name, p in WanDiT(cfg).state_dict().items()}
    sd = {}
    for name, shape in shapes.items():
        fan_in = shape[1] if len(shape) >= 2 else shape[0]
        if len(shape) == 5:
            fan_in = shape[1] * shape[2] * shape[3] * shape[4]
        std = 1.0 / fan_in**0.5 if len(shape) >= 2 else 0.1
        t = torch.randn(shape, generator=g, device=device) * std
        if "norm" in name and name.endswith("weight"):
            t = 1.0 + t
        if "modulation" in name:
            t = torch.randn(shape, generator=g, device=device) * 0.3
        if dtype is not None and "modulation" not in name:
            t = t.to(dtype)
        sd[name] = t.to("cpu").contiguous()
    return sd


def tiny_dit(cfg: WanDiTConfig, seed: int = 0) -> WanDiT:
    model = WanDiT(cfg)
    model.load_state_dict(random_dit_state(cfg, seed))
    return model.eval()


def dit_config_json(cfg: WanDiTConfig) -> dict:
    """A diffusers ``transformer/config.json`` for ``cfg`` (what real diffusers folders carry)."""
    return {
        "_class_name": "WanTransformer3DModel", "patch_size": list(cfg.patch_size),
        "num_attention_heads": cfg.num_heads, "attention_head_dim": cfg.head_dim,
        "in_channels": cfg.in_channels, "out_channels": cfg.out_channels, "text_dim": cfg.text_dim,
        "freq_dim": cfg.freq_dim, "ffn_dim": cfg.ffn_dim, "num_layers": cfg.num_layers,
        "cross_attn_norm": cfg.cross_attn_norm, "qk_norm": "rms_norm_across_heads", "eps": cfg.eps,
        "rope_max_seq_len": 1024,
    }


def write_diffusers_folder(sd: dict, cfg: WanDiTConfig, folder: Path, shards: int = 1) -> Path:
    """Write a diffusers ``transformer/`` folder (sharded with an index json when shards > 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    dsd = {official_to_diffusers(k): v for k, v in sd.items()}
    (folder / "config.json").write_text(json.dumps(dit_config_json(cfg)))
    if shards == 1:
        save_file(dsd, str(folder / "diffusion_pytorch_model.safetensors"))
        return folder
    keys = sorted(dsd)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: dsd[k] for k in keys[i::shards]}
        save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in dsd.values())},
             "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def quantizable(name: str, t: torch.Tensor) -> bool:
    """Which tensors real fp8 checkpoints store in fp8: the 2-D weights of the blocks."""
    return name.startswith("blocks.") and name.endswith(".weight") and t.dim() == 2


def fp8_state(sd: dict, dtype: torch.dtype, scaled: bool) -> tuple[dict, dict]:
    """(file tensors, fp32 tensors they decode to) for fp8 / ComfyUI scaled fp8 files."""
    out, decoded = {}, {}
    for name, t in sd.items():
        if not quantizable(name, t):
            out[name] = t.to(torch.bfloat16) if not name.endswith("modulation") else t
            decoded[name] = out[name].float()
            continue
        if scaled:
            scale = t.abs().max().float() / torch.finfo(dtype).max
            q = (t / scale).to(dtype)
            out[name] = q
            out[name[: -len(".weight")] + ".scale_weight"] = scale.reshape(())
            decoded[name] = q.float() * scale
        else:
            out[name] = t.to(dtype)
            decoded[name] = out[name].float()
    if scaled:
        out["scaled_fp8"] = torch.empty(0, dtype=dtype)
    return out, decoded
