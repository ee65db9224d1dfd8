"""Loading a Wan DiT from GGUF (QuantStack / city96 layouts): weights stay quantized in memory."""

from __future__ import annotations

import logging

import torch
from gguf import GGMLQuantizationType

from ..errors import ModelLayoutError
from ..gguf.dequant import dequantize, supported_types
from ..gguf.ops import gguf_ops
from ..gguf.reader import GGUFFile
from ..weights import assign_parameters
from .build import build_on_meta
from .config import config_from_state_dict
from .keymap import to_official_names
from .model import WanDiT

log = logging.getLogger(__name__)
WAN_ARCHITECTURES = ("wan",)


def _restore_shape(name: str, t, orig_shape, file: GGUFFile):
    """5-D tensors (patch_embedding) are stored with fewer dims: restore from metadata or the numel."""
    if orig_shape is not None:
        return tuple(int(v) for v in orig_shape)
    if name == "patch_embedding.weight" and len(t.shape) < 5:
        dim = t.shape[0]
        numel = 1
        for d in t.shape:
            numel *= d
        return (dim, numel // (dim * 4), 1, 2, 2)
    return t.shape


def load_dit_gguf(path, operations=None, compute_dtype: torch.dtype = torch.float32, device="cpu", model_class=WanDiT):
    """Load a Wan DiT GGUF; quantized weights are kept as GGML blocks and dequantized per layer call."""
    f = GGUFFile(path, what="Wan DiT GGUF")
    source = f.path.name
    if f.architecture is not None and f.architecture not in WAN_ARCHITECTURES:
        raise ModelLayoutError(
            f"{source} is a GGUF of architecture {f.architecture!r}, not a Wan DiT ('wan'). "
            + ("It looks like a text encoder: load it with the text encoder loader." if "t5" in str(f.architecture)
               else "Use a Wan2.1/Wan2.2 GGUF (e.g. QuantStack's Wan2.2-T2V-A14B-*.gguf).")
        )
    raw = f.tensors()
    names = to_official_names(raw.keys())
    tensors = {}
    for file_key, name in names.items():
        t = raw[file_key]
        shape = _restore_shape(name, t, f.field(f"comfy.gguf.orig_shape.{file_key}"), f)
        tensors[name] = (t, shape)
    config = config_from_state_dict({k: v[1] for k, v in tensors.items()}, source=source)
    model = build_on_meta(config, operations or gguf_ops, compute_dtype, model_class)
    state = {}
    slow = sorted({GGMLQuantizationType(t.qtype).name for t, _ in tensors.values()
                   if t.quantized and t.qtype not in supported_types()})
    if slow:  # decoded once here rather than by the numpy fallback on the CPU at every call
        log.warning("%s: GGUF types %s have no torch kernel; those tensors are dequantized to fp16 at load "
                    "(more memory than the file)", source, ", ".join(slow))
    for name, (t, shape) in tensors.items():
        if t.quantized and t.qtype not in supported_types():
            state[name] = dequantize(t.data, t.qtype, shape, torch.float16, name)
        elif t.quantized:
            module = model.get_submodule(name.rsplit(".", 1)[0])
            if not hasattr(module, "set_quantized"):
                raise ModelLayoutError(f"{source}: tensor {name} is quantized ({t.qtype}) but its layer cannot be.")
            module.set_quantized(t.data, t.qtype, shape)
            module.gguf_name = name
            state[name] = module.weight.data
        else:
            value = t.as_float().reshape(shape)
            state[name] = value.float() if name.endswith("modulation") else value
    assign_parameters(model, {k: v.to(device) for k, v in state.items()}, source)
    model.mapped_ranges = [f.mapped_range]  # weights still on the file's pages (see GGUFFile.mapped_range)
    return model.eval()
