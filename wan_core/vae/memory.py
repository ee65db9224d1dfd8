"""How much memory the Wan VAEs use on their device while decoding or encoding, beyond their weights.

Measured, not derived from another implementation: the depth-first decoder keeps, for every causal
3x3x3 convolution, its last input frames plus one frame's activations, so its peak follows the frame
size and not the length; the encoder works on 4-frame chunks, likewise. The constants are the
measured peaks of this implementation (tests/test_vae_memory.py measures them again, on the CPU, at
three sizes, and checks the estimate covers each measurement by at most 1.5x), per output pixel
and per byte of the compute dtype, rounded up by about 5%.
"""

from __future__ import annotations

import torch

# bytes per output pixel per byte of the compute dtype (fp32 measurements / 4)
_DECODE = {"2.1": 3150, "2.2": 4000}
_ENCODE = {"2.1": 4300, "2.2": 2050}


def _pixels(config, h: int, w: int, tile: int | None) -> int:
    """Output pixels of the largest piece decoded at once, from a latent of h x w (or a tile of it)."""
    if tile is not None:
        h, w = min(h, tile), min(w, tile)
    s = config.stride[1]
    return h * s * w * s


def decode_bytes(config, latent_shape, dtype: torch.dtype, tile: int | None = None) -> int:
    """Device memory for decoding one video of ``latent_shape`` [B, C, T, h, w] (batch items are
    decoded one after another), untiled or in tiles of ``tile`` latent pixels."""
    _, _, _, h, w = latent_shape
    return _DECODE[config.version] * _pixels(config, h, w, tile) * torch.finfo(dtype).bits // 8


def encode_bytes(config, video_shape, dtype: torch.dtype) -> int:
    """Device memory for encoding one video of ``video_shape`` [B, 3, F, H, W]."""
    _, _, _, h, w = video_shape
    return _ENCODE[config.version] * h * w * torch.finfo(dtype).bits // 8
