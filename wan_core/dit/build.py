"""Building a WanDiT on the meta device (no memory) for a loader to fill tensor by tensor."""

from __future__ import annotations

import torch

from .config import WanDiTConfig
from .model import WanDiT


def build_on_meta(config: WanDiTConfig, operations, compute_dtype: torch.dtype, model_class=WanDiT) -> WanDiT:
    """A WanDiT (or ``model_class``, a subclass) whose parameters live on the meta device until assigned."""
    with torch.device("meta"):
        model = model_class(config, operations=operations, compute_dtype=compute_dtype)
    return model.requires_grad_(False)
