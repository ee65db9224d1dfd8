"""Loading Wan VAEs (official/ComfyUI files or diffusers ``AutoencoderKLWan`` folders)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelLayoutError
from ..safetensors_io import SafetensorsCheckpoint
from ..weights import assign_parameters
from .keymap import is_diffusers_vae, vae_key_pairs
from .model import WanVAE, WanVAEConfig

_PREFIXES = ("first_stage_model.", "vae.")


def _strip(keys):
    for p in _PREFIXES:
        if any(k.startswith(p + "decoder.") for k in keys):
            return p
    return ""


def detect_vae_config(shapes: dict, source: str) -> WanVAEConfig:
    """Read the VAE version and sizes from ``{official key: shape}``; refuse other models."""
    if "decoder.middle.0.residual.0.gamma" not in shapes:
        keys = list(shapes)
        if any(k.startswith(("blocks.", "patch_embedding", "model.diffusion_model.")) for k in keys):
            kind = "a Wan DiT (diffusion model): put it in models/diffusion_models and use the DiT loader"
        elif any(k.startswith(("encoder.block.", "shared.", "enc.blk.")) for k in keys):
            kind = "a umt5 text encoder: put it in models/text_encoders"
        else:
            kind = f"{len(keys)} tensors such as {', '.join(sorted(keys)[:4])}"
        raise ModelLayoutError(f"{source} is not a Wan VAE (no decoder.middle.0.residual.0.gamma); it is {kind}. "
                               "Choose wan_2.1_vae.safetensors (Wan2.1, A14B) or wan2.2_vae.safetensors (TI2V-5B) "
                               "from models/vae.")
    version = "2.2" if "decoder.upsamples.0.upsamples.0.residual.2.weight" in shapes else "2.1"
    cfg = WanVAEConfig(
        version=version,
        z_dim=shapes["conv2.weight"][0],
        dim=shapes["encoder.conv1.weight"][0],
        dec_dim=shapes["decoder.conv1.weight"][0] // 4,
    )
    expected_in = 3 * cfg.patch**2
    if shapes["encoder.conv1.weight"][1] != expected_in:
        raise ModelLayoutError(
            f"{source}: encoder.conv1 takes {shapes['encoder.conv1.weight'][1]} channels; a Wan{version} VAE takes "
            f"{expected_in}. This is not a Wan2.1/Wan2.2 VAE."
        )
    return cfg


def load_vae(path, dtype: torch.dtype = torch.float32, operations=nn, device="cpu") -> WanVAE:
    """Load a Wan2.1 or Wan2.2 VAE (detected from tensors), in fp32 unless asked otherwise."""
    ck = SafetensorsCheckpoint.open(path, what="Wan VAE", subfolder="vae")
    source = ck.source.name
    prefix = _strip(list(ck.keys()))
    names = {k[len(prefix):]: k for k in ck.keys() if k.startswith(prefix)}
    if is_diffusers_vae(names):
        version = "2.2" if any(".down_blocks.0.resnets." in k for k in names) else "2.1"
        zc = ck.entries[names["post_quant_conv.weight"]].shape[0]
        probe = WanVAEConfig(version=version, z_dim=zc)
        back = {d: o for o, d in vae_key_pairs(probe).items()}
        names = {back.get(k, k): v for k, v in names.items()}
    shapes = {k: ck.entries[v].shape for k, v in names.items()}
    cfg = detect_vae_config(shapes, source)
    with torch.device("meta"):
        model = WanVAE(cfg, operations).requires_grad_(False)
    tensors = {k: ck.read(v, dtype).to(device) for k, v in names.items()}
    model.config = cfg
    assign_parameters(model, tensors, source)
    return model.eval()
