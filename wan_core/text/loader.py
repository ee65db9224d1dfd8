"""The one entry point for loading umt5: dispatch by file format."""

from __future__ import annotations

from typing import Optional

import torch

from .gguf_loader import load_text_encoder_gguf
from .model import UMT5TextEncoder
from .safetensors_loader import load_text_encoder_safetensors


def load_text_encoder(
    path,
    tokenizer_path=None,
    compute_dtype: torch.dtype = torch.float32,
    weight_dtype: Optional[torch.dtype] = None,
    operations=None,
    device="cpu",
) -> UMT5TextEncoder:
    """umt5 from safetensors (HF/ComfyUI names, fp8 / scaled fp8), a diffusers folder, or GGUF."""
    if str(path).lower().endswith(".gguf"):
        return load_text_encoder_gguf(path, tokenizer_path, compute_dtype, operations, device)
    return load_text_encoder_safetensors(path, tokenizer_path, compute_dtype, weight_dtype, operations, device)
