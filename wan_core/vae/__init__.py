"""The Wan2.1 / Wan2.2 VAEs: model (chunked causal cache, tiling), key names, loader."""

from .loader import load_vae
from .memory import decode_bytes, encode_bytes
from .model import WanVAE, WanVAEConfig, decode_tiled

__all__ = ["load_vae", "WanVAE", "WanVAEConfig", "decode_tiled", "decode_bytes", "encode_bytes"]
