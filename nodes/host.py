"""What the loader and decoder nodes need from ComfyUI: devices and dtypes, model files,
ModelPatcher wrapping and loading right before use, schema checks."""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.utils
import folder_paths


log = logging.getLogger("wan_core")

DIT_KEY, TEXT_ENCODER_KEY, VAE_KEY = "wan_core_dit", "wan_core_text_encoders", "wan_core_vae"
_EXTENSIONS = {".safetensors", ".sft", ".gguf"}


def register_model_folders() -> None:
    """Extra folder_paths keys that share core folders but also list .gguf (as ComfyUI-GGUF does)."""
    for key, core in ((DIT_KEY, "diffusion_models"), (TEXT_ENCODER_KEY, "text_encoders"), (VAE_KEY, "vae")):
        if key not in folder_paths.folder_names_and_paths:
            paths = folder_paths.folder_names_and_paths[core][0]  # the same list: later additions show up
            folder_paths.folder_names_and_paths[key] = (paths, _EXTENSIONS)


def diffusers_folders(subfolder: str) -> List[str]:
    """``diffusers/<name>`` entries for pipeline folders (models/diffusers) holding ``subfolder``."""
    out = []
    for base in folder_paths.get_folder_paths("diffusers"):
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            if os.path.isdir(os.path.join(base, name, subfolder)):
                out.append(f"diffusers/{name}")
    return out


_SHARD = re.compile(r"-\d{5}-of-\d{5}\.safetensors$")


def model_choices(key: str, subfolder: str) -> List[str]:
    """Files a loader offers: not the shards of a diffusers folder (the folder is offered), not
    broken links."""
    names = [n for n in folder_paths.get_filename_list(key) if not _SHARD.search(n)]
    names = [n for n in names if (p := folder_paths.get_full_path(key, n)) is not None and os.path.exists(p)]
    return sorted(names) + diffusers_folders(subfolder)


def resolve_model(key: str, name: str, subfolder: str) -> str:
    """A listed name -> full path; only names folder_paths (or models/diffusers) lists are accepted."""
    if name.startswith("diffusers/"):
        folder = name.split("/", 1)[1]
        for base in folder_paths.get_folder_paths("diffusers"):
            path = os.path.join(base, folder)
            if os.path.isdir(os.path.join(path, subfolder)):
                return path
        raise FileNotFoundError(f"diffusers folder {folder!r} with a {subfolder}/ subfolder not found in models/diffusers")
    return folder_paths.get_full_path_or_raise(key, name)


def file_identity(key: str, name: str, subfolder: str) -> str:
    """What a loader's ``IS_CHANGED`` reports for a listed model: the file's (or a diffusers folder's
    files') inode, size and modification time. ComfyUI runs the loader again, instead of handing on
    its cached model, when this changes: a file replaced or rewritten on disk is loaded anew."""
    try:
        path = resolve_model(key, name, subfolder)
    except (FileNotFoundError, OSError, ValueError) as err:
        return f"missing: {err}"  # the loader runs and reports it
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, f) for root, _, files in os.walk(path) for f in files)
    parts = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        parts.append(f"{os.path.relpath(p, path) if p != path else ''}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


_LOADED_AS: dict = {}  # model path -> the identity it had when a loader last read it


def reading(key: str, name: str, subfolder: str) -> None:
    """Called by a loader as it reads a model: says so in the log when the file changed on disk since
    a loader last read it (ComfyUI ran the loader again because its ``IS_CHANGED`` changed)."""
    try:
        path = resolve_model(key, name, subfolder)
    except (FileNotFoundError, OSError, ValueError):
        return
    identity = file_identity(key, name, subfolder)
    if _LOADED_AS.get(path, identity) != identity:
        log.warning("Wan: %s changed on disk since it was loaded; loading the new file", name)
    _LOADED_AS[path] = identity


WAN_DTYPES = [torch.float16, torch.bfloat16, torch.float32]  # what core's Wan model configs support, in order


def gguf_compute_dtype(device: torch.device) -> torch.dtype:
    """The host's compute dtype for a Wan model on ``device`` (``unet_dtype`` with Wan's supported
    dtypes: fp16 where the GPU runs it, then bf16, else fp32; ``--bf16-unet`` etc. honoured)."""
    return mm.unet_dtype(device, supported_dtypes=WAN_DTYPES)


VAE_WORKING_DTYPES = [torch.bfloat16, torch.float16, torch.float32]  # core's for the Wan VAEs, in order


def vae_operations(device: torch.device):
    """The host's layers on a GPU (its cuDNN 3-D convolution workaround for bf16 / fp16, per-op
    Cancel); plain torch.nn on the CPU, where our decoder's channels-last fast paths apply."""
    return torch.nn if device.type == "cpu" else comfy.ops.disable_weight_init


def compute_dtype(device: torch.device) -> torch.dtype:
    """The text encoder's: fp32 on the CPU; bf16 where the GPU supports it, else fp32 (umt5 overflows
    in fp16)."""
    if device.type == "cpu":
        return torch.float32
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


@dataclass
class ManagedModel:
    """A wan_core model wrapped for ComfyUI's memory manager, plus what the nodes need to know."""

    model: torch.nn.Module
    patcher: "comfy.model_patcher.ModelPatcher"
    kind: str
    source: str
    info: dict = field(default_factory=dict)

    def load(self, memory_required: int = 0) -> torch.device:
        """Ask ComfyUI to make room for the model and ``memory_required`` bytes of work (it offloads
        other models, e.g. the DiT, when they do not fit together) and put the model on its device."""
        mm.load_models_gpu([self.patcher], memory_required=memory_required)
        return self.patcher.load_device


def manage(model, kind: str, source: str, load_device, offload_device, **info) -> ManagedModel:
    model.to(offload_device)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    return ManagedModel(model, patcher, kind, source, info)


def weight_dtype_choice(name: str) -> Optional[torch.dtype]:
    return {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
            "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[name]


def require_finite(**values) -> None:
    """Refuse NaN / inf in float inputs, naming the input (ComfyUI's min/max checks let NaN through)."""
    for name, value in values.items():
        if value is not None and not math.isfinite(float(value)):
            raise ValueError(f"{name} is {value}: it must be a finite number (NaN and infinity are refused)")


def experts_match(high, low) -> None:
    """The two A14B experts must be the same model size: refuse another pair, naming both files."""
    a, b = high.config, low.config
    if (a.in_channels, a.dim, a.ffn_dim, a.num_layers) != (b.in_channels, b.dim, b.ffn_dim, b.num_layers):
        raise ValueError(
            f"the high- and low-noise experts are different models: {getattr(high, 'source', 'model')} is "
            f"{_described(a)} and {getattr(low, 'source', 'model_low_noise')} is {_described(b)}. Load both "
            "experts of one Wan2.2 A14B release.")


def _described(cfg) -> str:
    """A DiT's family, with its size when the family name does not already give it."""
    family = cfg.family
    return family if f"dim {cfg.dim}" in family else f"{family} (dim {cfg.dim}, {cfg.num_layers} layers)"


def dit_activation_bytes(memory_usage_factor: float, latent_shape, dtype: torch.dtype) -> int:
    """The least working memory a Wan DiT needs for one sampling step of ``latent_shape`` [B, C, T, H, W]:
    ComfyUI's own estimate (``BaseModel.memory_required``; Wan's ``memory_usage_factor`` is dim / 2222)
    in its memory-efficient attention branch, with the conditional and unconditional passes batched
    as core estimates them (batch x 2). Weights come on top, but ComfyUI can offload those."""
    b, _, t, h, w = latent_shape
    area = 2 * b * t * h * w
    return int(area * torch.finfo(dtype).bits // 8 * 0.01 * memory_usage_factor * 1024 * 1024)


def check_dit_fits(base_model, latent_shape, device) -> None:
    """Refuse, before sampling, a latent whose DiT activations alone exceed the device, with the
    estimate and the longest video that fits at this frame size."""
    dtype = base_model.get_dtype_inference()
    need = dit_activation_bytes(base_model.memory_usage_factor, latent_shape, dtype)
    total = mm.get_total_memory(device)
    if need <= total:
        return
    b, c, t, h, w = latent_shape
    fit = int(total / (need / t))
    while fit > 0 and dit_activation_bytes(base_model.memory_usage_factor, (b, c, fit, h, w), dtype) > total:
        fit -= 1
    hint = (f"at this frame size at most {4 * (fit - 1) + 1} frames fit" if fit >= 1 and b == 1 else
            "use a smaller frame size or batch")
    raise ValueError(f"a latent of {b} x {t} x {h} x {w} needs at least {_size(need)} for the DiT's activations "
                     f"(ComfyUI's estimate) but {device} has {_size(total)}: {hint}")


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
