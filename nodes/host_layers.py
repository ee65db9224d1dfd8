"""How the DiT's precision regions run on the host's layers (``comfy.ops``).

wan_core asks every layer call for a precision (``wan_core.ops.run_layer``): fp32 in the official
fp32 regions (time embedding and projection, norms, head), the compute dtype elsewhere. Host
layers expect their input in the compute dtype. Most of them can also compute in fp32, by casting
their weight per call as the official code does under fp32 autocast, and so keep those regions
official-exact; some cannot:

- ``--fast cublas_ops`` layers: a half-precision cuBLAS GEMM;
- ``--fast fp8_matrix_mult`` layers: fp8 matmuls that quantize (and clamp in place) their input;
- per-layer quantized layers (``mixed_precision_ops`` with a quantized weight): quantized matmuls,
  input scales and AWQ ``pre_quant_scale`` applied in their ``forward``.

Those get their input in the compute dtype through their own ``forward``, as native Wan gives it,
and their output is upcast. This adapter sets ``run_in`` on every host layer of the DiT, the
neutral hook ``run_layer`` calls.
"""

from __future__ import annotations

import functools

import torch

import comfy.ops

try:
    from comfy.quant_ops import QuantizedTensor
except ImportError:  # an older host without per-layer quantization
    QuantizedTensor = ()


def _special_linears() -> tuple:
    """Host Linear classes whose matmul needs the compute dtype (built only where available)."""
    classes = [comfy.ops.fp8_ops.Linear]
    if getattr(comfy.ops, "CUBLAS_IS_AVAILABLE", False):
        classes.append(comfy.ops.cublas_ops.Linear)
    return tuple(classes)


def computes_in_fp32(layer: torch.nn.Module) -> bool:
    """Whether a host layer can compute in fp32 by casting its weight (plain casting layers) rather
    than needing its input in the compute dtype (cuBLAS half GEMMs, fp8 matmuls, quantized layers)."""
    if isinstance(layer, _special_linears()):
        return False
    if QuantizedTensor and isinstance(getattr(layer, "weight", None), QuantizedTensor):
        return False
    return getattr(layer, "pre_quant_scale", None) is None and getattr(layer, "layout_type", None) is None


def run_in(layer: torch.nn.Module, compute_dtype: torch.dtype, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``layer`` on ``x`` at precision ``dtype`` (see the module docstring); the result in ``dtype``."""
    if dtype == compute_dtype or not computes_in_fp32(layer):
        return layer(x.to(compute_dtype)).to(dtype)
    weight = getattr(layer, "weight", None)
    casting = layer.comfy_cast_weights or layer.weight_function or layer.bias_function
    if weight is None or (weight.dtype == dtype and not casting):
        return layer(x.to(dtype))
    # resident in another dtype: the host's own cast for this call (its offload stream, LoRA patches)
    return layer.forward_comfy_cast_weights(x.to(dtype))


def attach(model: torch.nn.Module, compute_dtype: torch.dtype) -> None:
    """Give every host layer of ``model`` its ``run_in`` (ComfyUI's castable layers carry
    ``comfy_cast_weights``; wan_core's own casting layers keep their behaviour)."""
    for module in model.modules():
        if hasattr(module, "comfy_cast_weights") and not getattr(module, "casts_weights", False):
            module.run_in = functools.partial(run_in, module, compute_dtype)
