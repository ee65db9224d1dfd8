"""Layer namespaces for the DiT and the rules for calling them in a chosen dtype.

The model builds every weighted layer from an ``operations`` namespace (``Linear``, ``Conv3d``,
``LayerNorm``, ``RMSNorm``), as ComfyUI's models do.  ``torch.nn`` is the default; ``cast_ops``
below keeps weights in their stored dtype (fp8, bf16, ...) and casts them per call, which is how
fp8 checkpoints stay fp8 in memory.  ComfyUI's ``comfy.ops`` namespaces and GGUF layers plug in
the same way: any layer that casts its own weights marks itself with ``comfy_cast_weights`` or
``casts_weights``.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)
)


def layer_casts_weights(layer: nn.Module) -> bool:
    """True when ``layer`` casts its weights to the input's dtype/device on every call."""
    return bool(getattr(layer, "comfy_cast_weights", False) or getattr(layer, "casts_weights", False))


def run_layer(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Call ``layer`` computing in ``dtype``; the result is in ``dtype``.

    Callers state the precision they want (fp32 for time embedding, norms and head; the compute
    dtype for the rest). A layer that carries ``run_in(x, dtype)`` decides itself how to honour that
    (a host sets it on its own layers: it knows which of them can compute in fp32 and which expect
    their input in the compute dtype). Layers that cast their weights per call do so; plain layers
    compute in their weight dtype.
    """
    run_in = getattr(layer, "run_in", None)
    if run_in is not None:
        return run_in(x, dtype)
    weight = getattr(layer, "weight", None)
    if weight is None or layer_casts_weights(layer) or weight.dtype == dtype:
        return layer(x.to(dtype))
    return layer(x.to(weight.dtype)).to(dtype)


def attach_scale_weight(model: nn.Module, module_name: str, scale: torch.Tensor, tensors: dict) -> None:
    """Give a (meta-built) layer the ComfyUI scaled-fp8 ``scale_weight`` buffer its cast applies, and
    put the fp32 scalar into ``tensors`` under that buffer's state-dict key for assignment."""
    model.get_submodule(module_name).register_buffer("scale_weight", torch.empty((), device="meta"))
    tensors[f"{module_name}.scale_weight"] = scale.to(torch.float32).reshape(())


def apply_functions(tensor: Optional[torch.Tensor], functions) -> Optional[torch.Tensor]:
    """Run a layer's per-call weight (or bias) functions, e.g. LoRA patches, on the decoded tensor.

    Functions that carry the same ``key`` are one patch (all of a weight's LoRAs under that key):
    applied once. A host's memory manager may attach such a patch again when it moves the layer
    off the device (ComfyUI's ``partially_unload`` appends one beside the one set at load time)."""
    if tensor is None:
        return None
    seen = set()
    for fn in functions:
        key = getattr(fn, "key", None)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        tensor = fn(tensor)
    return tensor


def call_functions(layer: nn.Module, param: str) -> list:
    """Everything to run on the decoded ``param`` ("weight" / "bias") of a per-call layer: the
    functions a host attached (``weight_function`` / ``bias_function``) and the patch it set for the
    layer's lifetime in ``patch_functions`` (kept apart: a host resets the former lists as it moves
    layers on and off its device)."""
    functions = list(getattr(layer, f"{param}_function", ()))
    own = layer.patch_functions.get(param)
    return functions + [own] if own is not None else functions


def cast_bias(layer: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """The layer's bias in ``x``'s dtype and device, with its per-call functions applied."""
    bias = getattr(layer, "bias", None)
    if bias is None:
        return None
    functions = call_functions(layer, "bias")
    b = bias.to(device=x.device, dtype=x.dtype, copy=bool(functions))
    with layer.patch_scope(functions):
        return apply_functions(b, functions)


_WORKSPACE: Optional[dict] = None  # (shape, dtype, device) -> buffer, while cast_workspace() is active


@contextlib.contextmanager
def cast_workspace():
    """Decode per-call weights into buffers reused from layer to layer (one per weight shape) for
    the duration, instead of a fresh tensor per call.  On the CPU a fresh buffer of that size costs
    page faults (about as much as the fp8 -> fp32 conversion itself); freed on exit.  Only for
    inference (nothing may keep a decoded weight past its layer's call)."""
    global _WORKSPACE
    outer = _WORKSPACE
    _WORKSPACE = {} if outer is None else outer
    try:
        yield
    finally:
        _WORKSPACE = outer


def _decode_weight(weight: torch.Tensor, x: torch.Tensor, copy: bool) -> torch.Tensor:
    if _WORKSPACE is None or torch.is_grad_enabled() or weight.dtype == x.dtype or weight.device != x.device:
        return weight.to(device=x.device, dtype=x.dtype, copy=copy)
    key = (tuple(weight.shape), x.dtype, x.device)
    buf = _WORKSPACE.get(key)
    if buf is None:
        buf = _WORKSPACE[key] = torch.empty(weight.shape, dtype=x.dtype, device=x.device)
    return buf.copy_(weight)


def _cast_weight_bias(layer: nn.Module, x: torch.Tensor):
    """The layer's weight and bias in ``x``'s dtype and device, with a ComfyUI fp8 scale and the
    per-call weight functions (LoRA patches of a host) applied to the decoded values."""
    weight = layer.weight
    if weight is None:
        return None, None
    functions = call_functions(layer, "weight")
    w = _decode_weight(weight, x, bool(functions))
    scale = getattr(layer, "scale_weight", None)
    if scale is not None:  # in place on the decoded copy: one pass and one buffer fewer per call
        scale = scale.to(device=x.device, dtype=x.dtype)
        w = w.mul_(scale) if w is not weight else w * scale
    with layer.patch_scope(functions):
        return apply_functions(w, functions), cast_bias(layer, x)


class _PerCallCast:
    """Marks a layer as casting (and moving) its weights per call.

    ``comfy_cast_weights``/``weight_function``/``bias_function`` are the attributes ComfyUI's
    ModelPatcher looks for to decide a module may stay on the offload device (low-VRAM partial
    loading); these layers always move their weights to the input's device, so that is safe.
    ``weight_function``/``bias_function`` are lists of callables applied to the decoded tensor on
    every call (a host assigns new lists; the class-level empty tuples are never mutated).
    ``patches_per_call`` tells a host to patch such a layer per call rather than rewrite its
    stored weight (an fp8-scaled or quantized weight cannot take a merged patch without loss); it
    puts that patch in ``patch_functions`` ({"weight": fn, "bias": fn}, replaced, never mutated).
    A function with a ``key`` runs once per call however many lists carry it (see apply_functions).
    """

    casts_weights = True
    comfy_cast_weights = False
    patches_per_call = True
    weight_function = ()
    bias_function = ()
    patch_functions: dict = {}

    def patch_scope(self, functions):
        """A context around applying the per-call ``functions`` (a host's patches); a host may use it to
        report what its patches log (a LoRA that does not fit) once, not at every call."""
        return contextlib.nullcontext()


class CastLinear(_PerCallCast, nn.Linear):
    """A Linear whose stored weight may be of any dtype; cast to the input's dtype per call."""

    def reset_parameters(self):  # weights always come from a file; skip the random init
        return None

    def forward(self, x):
        w, b = _cast_weight_bias(self, x)
        return F.linear(x, w, b)


class CastConv3d(_PerCallCast, nn.Conv3d):
    """Conv3d with per-call weight casting (the DiT's patch embedding)."""

    def reset_parameters(self):
        return None

    def forward(self, x):
        w, b = _cast_weight_bias(self, x)
        return self._conv_forward(x, w, b)


class CastLayerNorm(_PerCallCast, nn.LayerNorm):
    """LayerNorm with per-call casting of its (optional) affine parameters."""

    def reset_parameters(self):
        return None

    def forward(self, x):
        w, b = _cast_weight_bias(self, x)
        return F.layer_norm(x, self.normalized_shape, w, b, self.eps)


class CastRMSNorm(_PerCallCast, nn.RMSNorm):
    """RMSNorm with per-call casting of its weight."""

    bias = None  # ComfyUI's ModelPatcher reads weight and bias of every castable module

    def reset_parameters(self):
        return None

    def forward(self, x):
        w, _ = _cast_weight_bias(self, x)
        return F.rms_norm(x, self.normalized_shape, w, self.eps)


class CastEmbedding(_PerCallCast, nn.Embedding):
    """An embedding table looked up where it is kept (a host may leave a large table off the
    compute device): only the rows asked for travel, returned on the ids' device."""

    bias = None  # ComfyUI's ModelPatcher reads weight and bias of every castable module

    def reset_parameters(self):
        return None

    def forward(self, ids):
        weight, functions = self.weight, call_functions(self, "weight")
        if functions:
            weight = apply_functions(weight.to(ids.device, copy=True), functions)
        return F.embedding(ids.to(weight.device), weight, self.padding_idx).to(ids.device)


cast_ops = SimpleNamespace(
    Linear=CastLinear, Conv3d=CastConv3d, LayerNorm=CastLayerNorm, RMSNorm=CastRMSNorm, Embedding=CastEmbedding
)
"""Per-call casting layers: weights stay in their stored dtype (fp8/bf16/fp16/fp32)."""
