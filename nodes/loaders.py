"""Loader nodes: text encoder, DiT (safetensors / GGUF / diffusers folder), VAE."""

from __future__ import annotations

import torch

import comfy.model_management as mm

from ..wan_core.attention import available_backends
from ..wan_core.dit.loader import load_dit
from ..wan_core.text.loader import load_text_encoder
from ..wan_core.vae.loader import load_vae
from .core_model import wrap_dit
from .host import (DIT_KEY, check_schema, TEXT_ENCODER_KEY, VAE_KEY, compute_dtype, dit_operations, manage, model_choices,
                   resolve_model, weight_dtype_choice)
from .model_adapter import ComfyWanDiT

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
            "weight_dtype": (["default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2"], {
                "default": "default",
                "tooltip": "How weights are kept in memory. default = as stored in the file. fp8 halves a bf16 "
                           "model's memory; weights are cast per layer at compute time. GGUF files keep their own "
                           "quantization (leave this on default)."}),
            "attention": (available_backends(), {
                "default": "sdpa", "tooltip": "Attention kernel. sdpa (PyTorch) works everywhere; others appear "
                                              "when their package is installed."}),
        }}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("ComfyUI's MODEL (Wan2.1 / Wan2.2 model sampling and latent format): connect LoRA loaders, "
                       "ModelSamplingSD3, EasyCache, context windows, guidance patches, KSampler or Wan Sampler.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, dit_name, weight_dtype, attention):
        error = check_schema(cls, dit_name=dit_name, weight_dtype=weight_dtype, attention=attention)
        if error:
            return error
        if str(dit_name).lower().endswith(".gguf") and weight_dtype != "default":
            return f"{dit_name} is GGUF: it keeps its own quantization; set weight_dtype to default"
        return True

    def load(self, dit_name, weight_dtype, attention):
        return (load_wan_model(resolve_model(DIT_KEY, dit_name, "transformer"), weight_dtype, attention),)


def load_wan_model(path: str, weight_dtype: str = "default", attention: str = "sdpa", disable_dynamic: bool = False):
    """A Wan DiT file (safetensors / GGUF / diffusers folder) as a core MODEL (ModelPatcher)."""
    device, offload = mm.get_torch_device(), mm.unet_offload_device()
    wdt = weight_dtype_choice(weight_dtype)
    dit = load_dit(path, operations=dit_operations(path, wdt), compute_dtype=compute_dtype(device, wdt), weight_dtype=wdt,
                   model_class=ComfyWanDiT)
    dit.attention_backend = attention
    return wrap_dit(dit, device, offload, reload=(load_wan_model, (path, weight_dtype, attention)))


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

    def load(self, text_encoder_name, device, dtype):
        path = resolve_model(TEXT_ENCODER_KEY, text_encoder_name, "text_encoder")
        load_device = torch.device("cpu") if device == "cpu" else mm.text_encoder_device()
        cdt = compute_dtype(load_device) if dtype == "default" else weight_dtype_choice(dtype)
        # wan_core's per-call casting layers (fp8 / scaled fp8 / GGUF stay compact; ModelPatcher can offload them)
        encoder = load_text_encoder(path, compute_dtype=cdt)
        offload = torch.device("cpu") if device == "cpu" else mm.text_encoder_offload_device()
        return (manage(encoder, "text_encoder", text_encoder_name, load_device, offload),)


class WanCoreLoadVAE:
    DESCRIPTION = "Loads the Wan2.1 (16-channel) or Wan2.2 (48-channel) VAE; the version is read from the tensors."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (model_choices(VAE_KEY, "vae"), {
                "tooltip": "wan_2.1_vae.safetensors or wan2.2_vae.safetensors in models/vae, or a diffusers folder."}),
            "dtype": (["fp32", "bf16", "fp16"], {
                "default": "fp32", "tooltip": "The official code runs the VAE in fp32; bf16/fp16 halve its memory."}),
        }}

    RETURN_TYPES = ("WANCORE_VAE",)
    RETURN_NAMES = ("vae",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, vae_name, dtype):
        path = resolve_model(VAE_KEY, vae_name, "vae")
        vae = load_vae(path, dtype=weight_dtype_choice(dtype))
        return (manage(vae, "vae", vae_name, mm.vae_device(), mm.vae_offload_device(), version=vae.config.version),)
