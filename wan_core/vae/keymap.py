"""VAE key names: official/ComfyUI (``wan_2.1_vae.safetensors``) <-> diffusers ``AutoencoderKLWan``.

The pairs are generated from the model's own structure, so one rule set serves both directions.
"""

from __future__ import annotations

import re
from typing import Dict

import torch

from .model import WanVAE, WanVAEConfig

_RESNET = [("residual.0.", "norm1."), ("residual.2.", "conv1."), ("residual.3.", "norm2."),
           ("residual.6.", "conv2."), ("shortcut.", "conv_shortcut.")]
_MIDDLE = {"0": "mid_block.resnets.0.", "1": "mid_block.attentions.0.", "2": "mid_block.resnets.1."}


def _resnet(rest: str) -> str:
    for a, b in _RESNET:
        if rest.startswith(a):
            return b + rest[len(a):]
    return rest


def _official_to_diffusers(key: str, cfg: WanVAEConfig) -> str:
    top = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
    for a, b in top.items():
        if key.startswith(a):
            return b + key[len(a):]
    part, rest = key.split(".", 1)  # encoder / decoder
    for a, b in (("conv1.", "conv_in."), ("head.0.", "norm_out."), ("head.2.", "conv_out.")):
        if rest.startswith(a):
            return f"{part}.{b}{rest[len(a):]}"
    m = re.match(r"middle\.(\d)\.(.*)", rest)
    if m:
        return f"{part}.{_MIDDLE[m.group(1)]}{_resnet(m.group(2))}"
    if cfg.version == "2.2":
        m = re.match(r"(down|up)samples\.(\d+)\.(?:down|up)samples\.(\d+)\.(.*)", rest)
        kind, stage, j, tail = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        per_stage = cfg.num_res_blocks + (1 if kind == "up" else 0)
        block = "down_blocks" if kind == "down" else "up_blocks"
        if j < per_stage:
            return f"{part}.{block}.{stage}.resnets.{j}.{_resnet(tail)}"
        return f"{part}.{block}.{stage}.{kind}sampler.{tail}"
    m = re.match(r"(down|up)samples\.(\d+)\.(.*)", rest)
    kind, n, tail = m.group(1), int(m.group(2)), m.group(3)
    if kind == "down":  # the 2.1 encoder is flat in both layouts
        return f"{part}.down_blocks.{n}.{_resnet(tail)}"
    per_stage = cfg.num_res_blocks + 2  # resnets + one upsampler
    stage, j = divmod(n, per_stage)
    if j <= cfg.num_res_blocks:
        return f"{part}.up_blocks.{stage}.resnets.{j}.{_resnet(tail)}"
    return f"{part}.up_blocks.{stage}.upsamplers.0.{tail}"


def vae_key_pairs(cfg: WanVAEConfig) -> Dict[str, str]:
    """{official key: diffusers key} for every parameter of a VAE with this configuration."""
    with torch.device("meta"):
        keys = list(WanVAE(cfg).state_dict().keys())
    return {k: _official_to_diffusers(k, cfg) for k in keys}


def is_diffusers_vae(keys) -> bool:
    return any(k.startswith(("encoder.conv_in.", "decoder.conv_in.", "quant_conv.")) for k in keys)
