"""Loader nodes: text encoder, DiT (safetensors / GGUF / diffusers folder), VAE."""

from __future__ import annotations

import os

import torch

import comfy.model_management as mm

from ..wan_core.attention import available_backends
from ..wan_core.dit.loader import is_gguf, load_dit
from ..wan_core.text.loader import load_text_encoder
from ..wan_core.vae.loader import load_vae
from .core_model import wrap_dit
from .dit_loading import load_host_model
from .gguf_layers import host_gguf_ops
from .host import (DIT_KEY, TEXT_ENCODER_KEY, VAE_KEY, VAE_WORKING_DTYPES, compute_dtype, file_identity,
                   gguf_compute_dtype, manage, model_choices, reading, resolve_model, vae_operations,
                   weight_dtype_choice)
from .model_adapter import HOST_ATTENTION, ComfyWanDiT

CATEGORY = "Wan Video (wan_core)/loaders"


class WanCoreLoadDiT:
    DESCRIPTION = ("Loads a Wan2.1 / Wan2.2 diffusion transformer (T2V 1.3B/14B, TI2V-5B, FastWan, either A14B "
                   "expert). The model family is read from the tensors, not the file name. safetensors (bf16, fp16, "
                   "fp8, ComfyUI scaled fp8), GGUF (stays quantized in memory) or a diffusers folder.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": (model_choices(DIT_KEY, "transformer"), {
                "tooltip": "File in models/diffusion_models (or models/unet), .safetensors or .gguf, or a diffusers "
                           "pipeline folder in models/diffusers."}),
            "weight_dtype": (list(DIT_WEIGHT_DTYPES), {
                "default": "default",
                "tooltip": "How weights are kept in memory. default = what ComfyUI's own loader picks for this file "
                           "and GPU (as UNETLoader). fp8 halves a bf16 model's memory; fp8_e4m3fn_fast also "
                           "computes with fp8 matmuls on GPUs that have them (Ada, Hopper, Blackwell). GGUF files "
                           "keep their own quantization (leave this on default)."}),
            "attention": ([HOST_ATTENTION] + available_backends(), {
                "default": HOST_ATTENTION,
                "tooltip": "auto = ComfyUI's attention, as native Wan uses it: follows --use-sage-attention / "
                           "--use-flash-attention and nodes that patch it. Others force a kernel (sdpa = PyTorch; "
                           "sage / flash_attn appear when their package is installed)."}),
        }}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("ComfyUI's MODEL (Wan2.1 / Wan2.2 model sampling and latent format): connect LoRA loaders, "
                       "ModelSamplingSD3, EasyCache, context windows, guidance patches, KSampler or Wan Sampler.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def IS_CHANGED(cls, dit_name, **_):
        return file_identity(DIT_KEY, dit_name, "transformer")

    def load(self, dit_name, weight_dtype, attention):
        if str(dit_name).lower().endswith(".gguf") and weight_dtype != "default":
            raise ValueError(f"weight_dtype is {weight_dtype}: {dit_name} is GGUF and keeps its own quantization; "
                             "set weight_dtype to default")
        reading(DIT_KEY, dit_name, "transformer")
        return (load_wan_model(resolve_model(DIT_KEY, dit_name, "transformer"), weight_dtype, attention),)


# weight_dtype choice -> (storage dtype or None for the host's pick, fp8 matmuls), as UNETLoader's options
DIT_WEIGHT_DTYPES = {"default": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, False),
                     "fp8_e4m3fn": (torch.float8_e4m3fn, False), "fp8_e4m3fn_fast": (torch.float8_e4m3fn, True),
                     "fp8_e5m2": (torch.float8_e5m2, False)}


def load_wan_model(path: str, weight_dtype: str = "default", attention: str = HOST_ATTENTION,
                   disable_dynamic: bool = False):
    """A Wan DiT file (safetensors / GGUF / diffusers folder) as a core MODEL (ModelPatcher).

    safetensors and diffusers folders load as core loads its own diffusion models (dit_loading);
    GGUF keeps its blocks quantized in wan_core's layers under the classic patcher."""
    reload = (load_wan_model, (path, weight_dtype, attention))
    if not is_gguf(path):
        dtype, fp8_fast = DIT_WEIGHT_DTYPES[weight_dtype]
        patcher = load_host_model(path, weight_dtype=dtype, fp8_optimizations=fp8_fast, attention=attention,
                                  disable_dynamic=disable_dynamic)
        patcher.cached_patcher_init = reload
        return patcher
    device, offload = mm.get_torch_device(), mm.unet_offload_device()
    dit = load_dit(path, operations=host_gguf_ops, compute_dtype=gguf_compute_dtype(device), model_class=ComfyWanDiT)
    dit.attention_backend = attention
    dit.source = os.path.basename(path)
    return wrap_dit(dit, device, offload, reload=reload)


class WanCoreLoadTextEncoder:
    DESCRIPTION = ("Loads umt5-xxl for Wan prompts (English and Chinese): ComfyUI's umt5_xxl_*.safetensors (fp16, "
                   "fp8 scaled; tokenizer embedded), a GGUF (city96), or a diffusers folder with tokenizer/.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder_name": (model_choices(TEXT_ENCODER_KEY, "text_encoder"), {
                "tooltip": "File in models/text_encoders (or models/clip), .safetensors or .gguf, or a diffusers "
                           "pipeline folder in models/diffusers."}),
            "device": (["default", "cpu"], {
                "default": "default", "tooltip": "default = ComfyUI's text encoder device; cpu keeps GPU memory "
                                                 "for the DiT (slower prompts)."}),
            "dtype": (["default", "bf16", "fp32"], {
                "default": "default", "tooltip": "Compute precision. default = bf16 on GPUs that support it, fp32 on "
                                                 "CPU. fp8 files stay fp8 in memory either way. (fp16 overflows in "
                                                 "T5 models and is not offered.)"}),
        }}

    RETURN_TYPES = ("WANCORE_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def IS_CHANGED(cls, text_encoder_name, **_):
        return file_identity(TEXT_ENCODER_KEY, text_encoder_name, "text_encoder")

    def load(self, text_encoder_name, device, dtype):
        reading(TEXT_ENCODER_KEY, text_encoder_name, "text_encoder")
        path = resolve_model(TEXT_ENCODER_KEY, text_encoder_name, "text_encoder")
        load_device = torch.device("cpu") if device == "cpu" else mm.text_encoder_device()
        cdt = compute_dtype(load_device) if dtype == "default" else weight_dtype_choice(dtype)
        # wan_core's per-call casting layers (fp8 / scaled fp8 / GGUF stay compact; ModelPatcher can offload them)
        encoder = load_text_encoder(path, compute_dtype=cdt, operations=host_gguf_ops if is_gguf(path) else None)
        offload = torch.device("cpu") if device == "cpu" else mm.text_encoder_offload_device()
        return (manage(encoder, "text_encoder", text_encoder_name, load_device, offload),)


class WanCoreLoadVAE:
    DESCRIPTION = "Loads the Wan2.1 (16-channel) or Wan2.2 (48-channel) VAE; the version is read from the tensors."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (model_choices(VAE_KEY, "vae"), {
                "tooltip": "wan_2.1_vae.safetensors or wan2.2_vae.safetensors in models/vae, or a diffusers folder."}),
            "dtype": (["default", "fp32", "bf16", "fp16"], {
                "default": "default", "tooltip": "default = ComfyUI's VAE dtype (bf16 on GPUs that have it, else fp16 "
                                                 "or fp32; --bf16-vae / --fp16-vae / --fp32-vae honoured), as core's "
                                                 "VAELoader. The official code runs the VAE in fp32."}),
        }}

    RETURN_TYPES = ("WANCORE_VAE",)
    RETURN_NAMES = ("vae",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def IS_CHANGED(cls, vae_name, **_):
        return file_identity(VAE_KEY, vae_name, "vae")

    def load(self, vae_name, dtype):
        reading(VAE_KEY, vae_name, "vae")
        path = resolve_model(VAE_KEY, vae_name, "vae")
        device = mm.vae_device()
        dt = mm.vae_dtype(device, VAE_WORKING_DTYPES) if dtype == "default" else weight_dtype_choice(dtype)
        vae = load_vae(path, dtype=dt, operations=vae_operations(device))
        return (manage(vae, "vae", vae_name, device, mm.vae_offload_device(), version=vae.config.version),)
