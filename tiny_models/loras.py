"""LoRA files for the tiny Wan DiT, in the key layouts users download.

- ``lightx2v``: ``diffusion_model.blocks.N.<layer>.lora_down/lora_up.weight`` + ``alpha`` (rank 64),
  ``diff`` for norms / the head and ``diff_b`` for biases, as the lightx2v / "Lightning"
  distillation LoRAs carry them, plus the Wan2.1 I2V keys (``img_emb``, ``k_img``, ``v_img``) a
  text-to-video model lacks;
- ``peft``: musubi-tuner / ai-toolkit ``diffusion_model.<layer>.lora_A/lora_B.weight``, no alpha;
- ``kohya``: ``lora_unet_blocks_N_self_attn_q.lora_down/lora_up.weight`` + ``alpha``;
- ``diffusers``: ``transformer.blocks.N.attn1.to_q.lora_A.weight`` (``transformer_2.`` for the A14B
  low-noise expert);
- ``loha`` / ``lokr``: LyCORIS ``hada_w1_a ...`` / ``lokr_w1, lokr_w2`` on ``diffusion_model.`` names.
"""

from __future__ import annotations

import torch

from wan_core import WanDiTConfig
from wan_core.dit.keymap import official_to_diffusers

LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
           "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


def _shape(cfg: WanDiTConfig, layer: str):
    """(out, in) of a block linear."""
    if layer == "ffn.0":
        return cfg.ffn_dim, cfg.dim
    if layer == "ffn.2":
        return cfg.dim, cfg.ffn_dim
    return cfg.dim, cfg.dim


def _pair(g, out_f, in_f, rank, scale=0.5):
    down = torch.randn(rank, in_f, generator=g) / in_f**0.5
    up = torch.randn(out_f, rank, generator=g) * scale / rank**0.5
    return down, up


def lora_state(cfg: WanDiTConfig, layout: str, rank: int = 8, seed: int = 1, prefix: str = "transformer.",
               layers=LINEARS) -> dict:
    """A LoRA over every block linear of ``cfg`` in ``layout``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(cfg.num_layers):
        for layer in layers:
            out_f, in_f = _shape(cfg, layer)
            name = f"blocks.{i}.{layer}"
            if layout == "loha":
                base = f"diffusion_model.{name}"
                r = max(2, rank // 2)
                sd[f"{base}.hada_w1_a"] = torch.randn(out_f, r, generator=g) * 0.3
                sd[f"{base}.hada_w1_b"] = torch.randn(r, in_f, generator=g) * 0.3 / in_f**0.5
                sd[f"{base}.hada_w2_a"] = torch.randn(out_f, r, generator=g) * 0.3
                sd[f"{base}.hada_w2_b"] = torch.randn(r, in_f, generator=g) * 0.3
                sd[f"{base}.alpha"] = torch.tensor(float(r))
                continue
            if layout == "lokr":
                base = f"diffusion_model.{name}"
                sd[f"{base}.lokr_w1"] = torch.randn(4, 4, generator=g) * 0.3
                sd[f"{base}.lokr_w2"] = torch.randn(out_f // 4, in_f // 4, generator=g) * 0.3 / in_f**0.5
                continue
            down, up = _pair(g, out_f, in_f, rank)
            if layout == "peft":
                sd[f"diffusion_model.{name}.lora_A.weight"] = down
                sd[f"diffusion_model.{name}.lora_B.weight"] = up
            elif layout == "kohya":
                base = "lora_unet_" + name.replace(".", "_")
                sd[f"{base}.lora_down.weight"] = down
                sd[f"{base}.lora_up.weight"] = up
                sd[f"{base}.alpha"] = torch.tensor(rank / 2)
            elif layout == "diffusers":
                base = prefix + official_to_diffusers(f"{name}.weight")[: -len(".weight")]
                sd[f"{base}.lora_A.weight"] = down
                sd[f"{base}.lora_B.weight"] = up
            elif layout == "lightx2v":
                sd[f"diffusion_model.{name}.lora_down.weight"] = down
                sd[f"diffusion_model.{name}.lora_up.weight"] = up
                sd[f"diffusion_model.{name}.alpha"] = torch.tensor(float(rank))
                sd[f"diffusion_model.{name}.diff_b"] = torch.randn(out_f, generator=g) * 0.05
            else:
                raise ValueError(layout)
        if layout == "lightx2v":
            for norm in ("norm3", "self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q"):
                sd[f"diffusion_model.blocks.{i}.{norm}.diff"] = torch.randn(cfg.dim, generator=g) * 0.05
            sd[f"diffusion_model.blocks.{i}.norm3.diff_b"] = torch.randn(cfg.dim, generator=g) * 0.05
            sd[f"diffusion_model.blocks.{i}.modulation.diff"] = torch.randn(1, 6, cfg.dim, generator=g) * 0.05
    if layout == "lightx2v":
        head_out = cfg.out_channels * 4
        sd["diffusion_model.head.head.diff"] = torch.randn(head_out, cfg.dim, generator=g) * 0.01
        sd["diffusion_model.head.head.diff_b"] = torch.randn(head_out, generator=g) * 0.01
        # Wan2.1 image-to-video parts a text-to-video model does not have
        for i in range(cfg.num_layers):
            for layer in ("cross_attn.k_img", "cross_attn.v_img"):
                down, up = _pair(g, cfg.dim, cfg.dim, rank)
                sd[f"diffusion_model.blocks.{i}.{layer}.lora_down.weight"] = down
                sd[f"diffusion_model.blocks.{i}.{layer}.lora_up.weight"] = up
                sd[f"diffusion_model.blocks.{i}.{layer}.alpha"] = torch.tensor(float(rank))
        down, up = _pair(g, cfg.dim, 1280, rank)
        sd["diffusion_model.img_emb.proj.1.lora_down.weight"] = down
        sd["diffusion_model.img_emb.proj.1.lora_up.weight"] = up
    return {k: v.contiguous() for k, v in sd.items()}


def to_official(sd: dict, prefix: str = "transformer.") -> dict:
    """A diffusers-named LoRA renamed to ``diffusion_model.`` official names (what native Wan reads)."""
    from wan_core.dit.keymap import diffusers_to_official

    out = {}
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        stem, leaf = k[len(prefix):].rsplit(".lora_", 1)
        out[f"diffusion_model.{diffusers_to_official(stem + '.weight')[: -len('.weight')]}.lora_{leaf}"] = v
    return out
