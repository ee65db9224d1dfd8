"""Loading a Wan DiT file the way ComfyUI loads its own diffusion models, with our model class.

For safetensors files and diffusers folders this follows ``comfy.sd.load_diffusion_model_state_dict``
(what ``UNETLoader`` runs) step by step, so on a GPU the model is what core would have made of the
same file under the same flags:

- legacy ``scaled_fp8`` files and the ``_quantization_metadata`` header become per-layer
  ``comfy_quant`` configs (``comfy.utils.convert_old_quants``); per-layer quantized files (fp8,
  int8, mxfp8, nvfp4) get the host's mixed-precision operations;
- storage and compute dtypes from the host's rules (``unet_dtype`` / ``unet_manual_cast`` with
  Wan's supported dtypes, ``--bf16-unet`` and friends, the node's ``weight_dtype``);
- layers from ``comfy.ops.pick_operations`` (async offload casts, ``--fast`` fp8 matmuls, cublas
  ops, per-layer cancel), filled by ``load_state_dict`` so DynamicVRAM's lazy layers work;
- the patcher core would use (``CoreModelPatcher``: ``ModelPatcherDynamic`` under DynamicVRAM).

What stays ours: wan_core's validated reader (errors name the file), official / ComfyUI /
diffusers key names, the Wan model code. GGUF files take wan_core's path (see ``core_model``).
"""

from __future__ import annotations

import functools
import json
import logging
import weakref
from typing import Optional

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models
import comfy.utils

from ..wan_core.dit.config import WanDiTConfig, config_from_state_dict
from ..wan_core.dit.keymap import to_official_names
from ..wan_core.errors import ModelLayoutError
from ..wan_core.safetensors_io import SafetensorsCheckpoint
from .core_model import WanCoreWAN21, WanCoreWAN22, unet_config_for
from .model_adapter import ComfyWanDiT

log = logging.getLogger("wan_core")

_PACKED_LAST_DIM = {"nvfp4": 2}  # quant formats that store several values per byte along the input dim


def read_state_dict(path: str):
    """(state dict under official names, header metadata, file name) of a Wan DiT safetensors file or
    diffusers folder. The layout is checked by wan_core's validated reader (errors name the file);
    the tensors come from the host's reader (``load_torch_file``: memory-mapped, and under DynamicVRAM
    through comfy-aimdo's mapping, as for a natively loaded file)."""
    ck = SafetensorsCheckpoint.open(path, what="Wan DiT (diffusion model)", subfolder="transformer")
    tensors = {}
    for file in sorted({e.file for e in ck.entries.values()}):
        tensors.update(comfy.utils.load_torch_file(str(file)))
    names = to_official_names(tensors)
    sd = {names.get(key, key): t for key, t in tensors.items()}  # a legacy ``scaled_fp8`` marker keeps its name
    return sd, dict(ck.metadata or {}), ck.source.name


def logical_shapes(sd: dict) -> dict:
    """Every tensor's shape as the model declares it (packed quantized weights unpacked)."""
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for key, conf in sd.items():
        if not key.endswith(".comfy_quant"):
            continue
        fmt = json.loads(conf.numpy().tobytes()).get("format")
        weight = key[: -len("comfy_quant")] + "weight"
        if fmt in _PACKED_LAST_DIM and weight in shapes:
            shape = shapes[weight]
            shapes[weight] = shape[:-1] + (shape[-1] * _PACKED_LAST_DIM[fmt],)
    return shapes


def host_dtypes(sd: dict, model_config, load_device, weight_dtype: Optional[torch.dtype]):
    """(storage dtype, manual-cast dtype) by the host's own rules, as for a natively loaded file."""
    supported = list(model_config.supported_inference_dtypes)
    stored = None if model_config.quant_config is not None else comfy.utils.weight_dtype(sd)
    unet_dtype = weight_dtype or mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                                               supported_dtypes=supported, weight_dtype=stored)
    manual = mm.unet_manual_cast(None if model_config.quant_config is not None else unet_dtype, load_device, supported)
    return unet_dtype, manual


def build_dit(config: WanDiTConfig, attention: str, compute_dtype: torch.dtype, device=None, operations=None,
              dtype=None, **_unet_config):
    """The factory BaseModel calls as ``unet_model(**unet_config, device=, operations=)``."""
    return ComfyWanDiT(config, operations=operations, compute_dtype=compute_dtype, attention_backend=attention,
                       device=device, dtype=dtype)


def load_host_model(path: str, weight_dtype: Optional[torch.dtype] = None, fp8_optimizations: bool = False,
                    attention: str = "auto", disable_dynamic: bool = False, load_device=None, offload_device=None):
    """A Wan DiT safetensors file or diffusers folder as a core MODEL, loaded as core loads its own."""
    sd, metadata, source = read_state_dict(path)
    sd, metadata = comfy.utils.convert_old_quants(sd, "", metadata=metadata)
    config = config_from_state_dict(logical_shapes(sd), source=source)
    load_device = load_device or mm.get_torch_device()
    offload_device = offload_device or mm.unet_offload_device()

    unet_config = unet_config_for(config)
    wan22 = config.latent_channels == 48
    model_config = (comfy.supported_models.WAN22_T2V if wan22 else comfy.supported_models.WAN21_T2V)(unet_config)
    model_config.quant_config = comfy.utils.detect_layer_quantization(sd, "")
    unet_dtype, manual = host_dtypes(sd, model_config, load_device, weight_dtype)
    model_config.set_inference_dtype(unet_dtype, manual, device=load_device)
    if fp8_optimizations:
        model_config.optimizations["fp8"] = True
    factory = functools.partial(build_dit, config, attention, manual or unet_dtype)
    try:
        model = (WanCoreWAN22 if wan22 else WanCoreWAN21)(model_config, device=None, unet_model=factory)
        patcher_class = comfy.model_patcher.ModelPatcher if disable_dynamic else comfy.model_patcher.CoreModelPatcher
        patcher = patcher_class(model, load_device=load_device, offload_device=offload_device)
        if not mm.is_device_cpu(offload_device):
            model.to(offload_device)
        missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=False, assign=patcher.is_dynamic())
    except (ValueError, KeyError, RuntimeError) as e:  # the host's quantized loaders name the layer, not the file
        raise ModelLayoutError(f"{source}: the host could not load this file's layers ({e}). The file is "
                               "incomplete or in a quantization format this ComfyUI cannot read; use the "
                               "bf16/fp16/fp8 release or update ComfyUI.") from e
    missing = [k for k in missing if not k.endswith(("comfy_quant", "_scale", "_scale_2"))]
    if missing:
        raise ModelLayoutError(f"{source} lacks {len(missing)} tensors the detected {config.family} needs, e.g. "
                               f"{missing[:4]}; the file is incomplete or from another model.")
    unexpected = [k for k in unexpected if k != "scaled_fp8"]
    if unexpected:
        log.warning("%s: ignoring %d tensors not used by the model, e.g. %s", source, len(unexpected), unexpected[:4])
    model.diffusion_model.source = source  # named in errors (e.g. two A14B experts that do not match)
    model.diffusion_model.owner = weakref.ref(model)  # the DiT reads its owner's patch uuid (text reuse)
    log.info("loaded %s from %s: weights %s, compute %s, %s operations, %s", config.family, source, unet_dtype,
             manual or unet_dtype, type(model.diffusion_model.blocks[0].ffn[0]).__qualname__.split(".")[0],
             type(patcher).__name__)
    return patcher
