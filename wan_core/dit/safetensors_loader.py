"""Loading a WanDiT from safetensors (single file or diffusers folder) without holding two copies.

The model is built on the meta device, then each tensor is read from the file into its final
buffer and assigned.  fp8 weights stay fp8 (ComfyUI's ``scaled_fp8`` scales ride along as
``scale_weight`` buffers) and are cast per layer at compute time by the ``operations`` layers.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

import torch

from ..ops import FP8_DTYPES, attach_scale_weight, cast_ops
from ..safetensors_io import SafetensorsCheckpoint
from ..weights import assign_parameters
from .build import build_on_meta
from .config import WanDiTConfig, config_from_state_dict
from .keymap import to_official_names
from .model import WanDiT

log = logging.getLogger(__name__)

# Small parameters used in fp32 regions: never stored in fp8 (a conversion request leaves them as
# the file has them, and an fp8 file's copies are widened to fp32). Any other stored dtype is kept:
# the model casts them to fp32 where they are used, which is exact, and the layout equals the
# native model's, so a host's weight patches round identically.
_FP32_PARAM_SUFFIXES = ("modulation", "norm_q.weight", "norm_k.weight", "norm3.weight", "norm3.bias")

# ComfyUI scaled-fp8 side tensors: not parameters of the model itself.
_SCALE_SUFFIXES = (".scale_weight", ".scale_input")
_MARKERS = ("scaled_fp8",)


def storage_dtype(name: str, file_dtype: torch.dtype, weight_dtype: Optional[torch.dtype]) -> torch.dtype:
    """The dtype a parameter is kept in: fp32 for modulation/norms, fp8 stays fp8, else as asked."""
    if name.endswith(_FP32_PARAM_SUFFIXES):
        return torch.float32 if file_dtype in FP8_DTYPES else file_dtype
    if file_dtype in FP8_DTYPES:
        return file_dtype
    if weight_dtype is None:
        return file_dtype
    if weight_dtype in FP8_DTYPES and (
        not name.endswith(".weight") or name.startswith(("patch_embedding", "time_", "head.", "text_embedding"))
    ):
        return file_dtype  # biases, fp32 regions and the small embeddings are not worth fp8 rounding
    return weight_dtype


class DiTCheckpoint:
    """A DiT checkpoint's tensors under official names, with its detected configuration."""

    def __init__(self, ckpt: SafetensorsCheckpoint):
        self.ckpt = ckpt
        source = ckpt.source.name
        names = to_official_names(k for k in ckpt.keys() if k not in _MARKERS)
        self.file_key: Dict[str, str] = {}  # official name -> file key
        self.scales: Dict[str, str] = {}  # official module name -> file key of its scale_weight
        for file_key, name in names.items():
            if name.endswith(".scale_weight"):
                self.scales[name[: -len(".scale_weight")]] = file_key
            elif not name.endswith(_SCALE_SUFFIXES):
                self.file_key[name] = file_key
        shapes = {name: ckpt.entries[k].shape for name, k in self.file_key.items()}
        self.config: WanDiTConfig = config_from_state_dict(shapes, source=source)

    @classmethod
    def open(cls, path) -> "DiTCheckpoint":
        return cls(SafetensorsCheckpoint.open(path, what="Wan DiT (diffusion model)", subfolder="transformer"))

    def dtype_of(self, name: str) -> torch.dtype:
        return self.ckpt.entries[self.file_key[name]].dtype


def load_dit_safetensors(
    path,
    operations=None,
    compute_dtype: torch.dtype = torch.float32,
    weight_dtype: Optional[torch.dtype] = None,
    device: torch.device | str = "cpu",
    model_class=WanDiT,
) -> WanDiT:
    """A Wan DiT from a safetensors file or diffusers folder (official/ComfyUI/diffusers names).

    ``weight_dtype`` converts the stored weights once (e.g. bf16 -> fp8); ``None`` keeps the file's.
    """
    ck = DiTCheckpoint.open(path)
    model = build_on_meta(ck.config, operations or cast_ops, compute_dtype, model_class)
    tensors = {}
    for name, key in ck.file_key.items():
        t = ck.ckpt.read(key, storage_dtype(name, ck.dtype_of(name), weight_dtype))
        tensors[name] = t.to(device) if str(device) != "cpu" else t
    for module_name, key in ck.scales.items():
        attach_scale_weight(model, module_name, ck.ckpt.read(key, torch.float32).to(device), tensors)
    assign_parameters(model, tensors, ck.ckpt.source.name)
    log.info("loaded %s (%s) from %s", ck.config.family, _dtype_summary(tensors), ck.ckpt.source)
    return model.eval()


def _dtype_summary(tensors: Dict[str, torch.Tensor]) -> str:
    counts: Dict[str, int] = {}
    for t in tensors.values():
        counts[str(t.dtype).replace("torch.", "")] = counts.get(str(t.dtype).replace("torch.", ""), 0) + t.numel()
    total = sum(counts.values())
    return ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
