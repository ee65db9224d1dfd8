"""Layers whose weights stay GGML-quantized in memory and are dequantized per call.

The quantized bytes are an ordinary uint8 Parameter, so moving the module (ComfyUI's
ModelPatcher, ``.to()``) moves the compact form; each call moves the bytes to the input's device
if needed and dequantizes there, in the input's dtype.  Float weights (F32/F16/BF16 tensors of
the same file) fall through to the per-call casting of ``wan_core.ops``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import (CastConv3d, CastLayerNorm, CastLinear, CastRMSNorm, _PerCallCast, apply_functions, call_functions,
                   cast_bias)
from .dequant import dequant_workspace_bytes, dequantize


def fetch_to(raw: torch.Tensor, device: torch.device):
    """The compact bytes on ``device`` and a function to call once they have been read there (None
    here). A host replaces this per layer class to copy on its own offload stream (see ``nodes/``)."""
    return raw.to(device, non_blocking=True), None


class _Quantized:
    """Mixin: an optional quantized weight (qtype, logical shape) replacing ``weight``."""

    qtype = None
    logical_shape = None
    fetch = staticmethod(fetch_to)

    def set_quantized(self, raw: torch.Tensor, qtype: int, shape) -> None:
        self.weight = nn.Parameter(raw, requires_grad=False)
        self.qtype, self.logical_shape = int(qtype), tuple(shape)

    def decode_bytes(self, dtype: torch.dtype) -> int:
        """Device memory one call allocates to decode the weight in ``dtype`` (0 for float weights)."""
        if self.qtype is None:
            return 0
        return dequant_workspace_bytes(self.qtype, math.prod(self.logical_shape), dtype)

    def quantized_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The weight dequantized on ``x``'s device in ``x``'s dtype, per-call functions (LoRA) applied."""
        raw, done = self.fetch(self.weight, x.device) if self.weight.device != x.device else (self.weight, None)
        w = dequantize(raw, self.qtype, self.logical_shape, x.dtype, name=getattr(self, "gguf_name", type(self).__name__))
        if done is not None:
            done()
        functions = call_functions(self, "weight")
        with self.patch_scope(functions):
            return apply_functions(w, functions)


class GGUFLinear(_Quantized, CastLinear):
    def forward(self, x):
        if self.qtype is None:
            return super().forward(x)
        return F.linear(x, self.quantized_weight(x), cast_bias(self, x))


class GGUFConv3d(_Quantized, CastConv3d):
    def forward(self, x):
        if self.qtype is None:
            return super().forward(x)
        return self._conv_forward(x, self.quantized_weight(x), cast_bias(self, x))


class GGUFEmbedding(_Quantized, _PerCallCast, nn.Embedding):
    """Token embeddings: only the looked-up rows are dequantized (umt5's table is 256k x 4096)."""

    out_dtype = torch.float32
    bias = None  # ComfyUI's ModelPatcher looks for weight and bias on every castable module

    def reset_parameters(self):
        return None

    def forward(self, ids):
        # looked up where the table is kept (a host may leave it off the compute device): only the
        # rows asked for travel to the ids' device
        if self.qtype is None:
            return F.embedding(ids.to(self.weight.device), self.weight).to(ids.device, self.out_dtype)
        flat = ids.reshape(-1)
        rows = self.weight[flat.to(self.weight.device)].to(ids.device)
        out = dequantize(rows, self.qtype, (flat.numel(), self.logical_shape[1]), self.out_dtype, "token_embd")
        return out.reshape(*ids.shape, -1)


gguf_ops = SimpleNamespace(
    Linear=GGUFLinear, Conv3d=GGUFConv3d, LayerNorm=CastLayerNorm, RMSNorm=CastRMSNorm, Embedding=GGUFEmbedding
)
"""Operations for models loaded from GGUF (weights dequantized per call)."""
