"""wan_core's GGUF layers under ComfyUI's memory manager: the host's offload stream for their
compact bytes, and their decode memory where the host budgets memory.

A GGUF layer keeps its GGML blocks in memory and dequantizes them at every call, on the device,
to the compute dtype. The host does not know that:

- its per-module budget (``ModelPatcher._load_list``: what an offloaded layer needs on the device
  while it computes) counts the compact bytes as if they were weights of the compute dtype, about
  a fifth of the decoded weight plus the decode's temporaries;
- its activation estimate (``BaseModel.memory_required``) has no room for the decoded weight of
  even a resident layer, which every call materialises;
- its layers copy offloaded weights on an offload stream (``get_offload_stream``), overlapping the
  copy with the compute of earlier layers; ours copied on the compute stream.

``host_gguf_ops`` are wan_core's GGUF layers with the host's copy; :func:`offload_budget` and
:func:`largest_decode_bytes` are what the patcher and the BaseModel add to the host's estimates.
"""

from __future__ import annotations

import contextlib
import logging
import math
from types import SimpleNamespace

import torch

import comfy.model_management as mm
import comfy.model_patcher

from ..wan_core.gguf.ops import GGUFConv3d, GGUFEmbedding, GGUFLinear, gguf_ops
from ..wan_core.ops import CastLayerNorm, CastRMSNorm


def host_fetch(raw: torch.Tensor, device: torch.device):
    """Copy compact bytes to ``device`` on the host's offload stream, as its own layers copy their
    weights (``comfy.ops.cast_bias_weight``): the compute stream waits for the copy, and once the
    bytes are decoded the offload stream waits for the compute stream before it is used again
    (``uncast_bias_weight``)."""
    stream = mm.get_offload_stream(device)
    out = mm.cast_to(raw, None, device, non_blocking=mm.device_supports_non_blocking(device), stream=stream)
    if stream is None:
        return out, None
    mm.sync_stream(device, stream)
    return out, lambda: stream.wait_stream(mm.current_stream(device))


class _Silent(logging.Filter):
    def filter(self, record):
        return False


_SILENT = _Silent()


@contextlib.contextmanager
def reported_once(layer, functions):
    """Apply a layer's per-call patches logging what the host logs while applying them (a LoRA whose
    shapes do not fit: "ERROR lora ...", "WARNING SHAPE MISMATCH ...") at the first call with these
    patches only: a merged patch reports once at load; a per-call one would at every step. New patch
    objects (a new LoRA, the next load) report again."""
    patches = tuple(map(id, functions))
    reported = layer.__dict__.setdefault("_reported_patches", [])  # the weight's and the bias's
    if not patches or patches not in reported:
        reported[:] = reported[-3:] + [patches]
        yield
        return
    root = logging.getLogger()  # the host logs these through the root logger
    root.addFilter(_SILENT)
    try:
        yield
    finally:
        root.removeFilter(_SILENT)


class _HostGGUF:
    fetch = staticmethod(host_fetch)

    def patch_scope(self, functions):
        return reported_once(self, functions)


class HostGGUFLinear(_HostGGUF, GGUFLinear):
    pass


class HostGGUFConv3d(_HostGGUF, GGUFConv3d):
    pass


class HostGGUFEmbedding(_HostGGUF, GGUFEmbedding):
    pass


class HostLayerNorm(_HostGGUF, CastLayerNorm):
    pass


class HostRMSNorm(_HostGGUF, CastRMSNorm):
    pass


host_gguf_ops = SimpleNamespace(**{**vars(gguf_ops), "Linear": HostGGUFLinear, "Conv3d": HostGGUFConv3d,
                                   "Embedding": HostGGUFEmbedding, "LayerNorm": HostLayerNorm,
                                   "RMSNorm": HostRMSNorm})
"""wan_core's GGUF operations with the host's offload-stream copy."""


def _decodes(module) -> bool:
    return getattr(module, "qtype", None) is not None and hasattr(module, "decode_bytes")


def offload_budget(patcher, module_name: str, module, module_mem: int, dtype: torch.dtype) -> int:
    """What an offloaded GGUF layer needs on the device while it computes: its compact bytes, the
    decoded weight in ``dtype`` with the decode's temporaries, and room for a per-call patch (LoRA)
    on the decoded weight, counted as the host counts it for its own layers."""
    need = module_mem + module.decode_bytes(dtype)
    if f"{module_name}.weight" in patcher.patches:
        need += math.prod(module.logical_shape) * dtype.itemsize * comfy.model_patcher.LOWVRAM_PATCH_ESTIMATE_MATH_FACTOR
    return need


def adjust_load_list(patcher, loading: list, dtype: torch.dtype) -> list:
    """The host's ``_load_list`` with GGUF layers' offload cost (its sort key and budget) replaced by
    :func:`offload_budget`; other layers as the host counted them."""
    out = []
    for entry in loading:
        module_mem, name, module = entry[-4], entry[-3], entry[-2]
        if len(entry) == 5 and _decodes(module):  # the classic patcher's (offload cost, size, name, module, params)
            entry = (offload_budget(patcher, name, module, module_mem, dtype),) + tuple(entry[1:])
        out.append(entry)
    return out


def largest_decode_bytes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """The most memory one GGUF layer's call allocates to decode its weight: every call of a
    resident layer materialises it too, so it belongs in the model's working memory."""
    return max((m.decode_bytes(dtype) for m in model.modules() if _decodes(m)), default=0)
