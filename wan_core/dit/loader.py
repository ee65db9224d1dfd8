"""The one entry point for loading a Wan DiT: dispatch by file format."""

from __future__ import annotations

from typing import Optional

import torch

from .gguf_loader import load_dit_gguf
from .model import WanDiT
from .safetensors_loader import load_dit_safetensors


def is_gguf(path) -> bool:
    return str(path).lower().endswith(".gguf")


def load_dit(
    path,
    operations=None,
    compute_dtype: torch.dtype = torch.float32,
    weight_dtype: Optional[torch.dtype] = None,
    device: torch.device | str = "cpu",
    model_class=WanDiT,
) -> WanDiT:
    """Load a Wan DiT from safetensors (file or diffusers folder) or GGUF (kept quantized).

    ``operations`` decides the layers (default: per-call casting, so any stored dtype computes in
    ``compute_dtype``); ``model_class`` may be a subclass of :class:`WanDiT` (an adapter).
    """
    if is_gguf(path):
        if weight_dtype is not None:
            raise ValueError(f"{path}: GGUF files keep their own quantization; weight_dtype must be None")
        return load_dit_gguf(path, operations=operations, compute_dtype=compute_dtype, device=device,
                             model_class=model_class)
    return load_dit_safetensors(path, operations=operations, compute_dtype=compute_dtype, weight_dtype=weight_dtype,
                                device=device, model_class=model_class)
