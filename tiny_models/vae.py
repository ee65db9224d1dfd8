"""Tiny Wan VAEs (reduced widths, every layer kind and the causal caches) with random weights."""

from __future__ import annotations

import torch

from wan_core.vae import WanVAE, WanVAEConfig

# Reduced widths (the real ones are 96 and 160/256); every layer kind and the causal caches remain.
TINY21 = WanVAEConfig("2.1", z_dim=16, dim=8, dec_dim=8)
TINY22 = WanVAEConfig("2.2", z_dim=48, dim=8, dec_dim=16)


def random_vae_state(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        keys = WanVAE(cfg).state_dict()
    sd = {}
    for k, p in keys.items():
        if k.endswith("gamma"):
            sd[k] = 1 + 0.1 * torch.randn(p.shape, generator=g)
        elif p.dim() > 1:
            sd[k] = torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5)
        else:
            sd[k] = 0.05 * torch.randn(p.shape, generator=g)
    return sd
