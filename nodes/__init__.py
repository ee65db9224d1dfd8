"""ComfyUI adapter for wan_core: node schemas, model files, memory manager, progress."""

from .host import register_model_folders
from .loaders import WanCoreLoadDiT, WanCoreLoadTextEncoder, WanCoreLoadVAE
from .lora import WanCoreLoraLoader, register_lora_key_aliases
from .prompts import WanCoreEncodePrompts
from .sampler_nodes import WanCoreExpertGuider, WanCoreNoise, WanCoreSampler, WanCoreSamplerSelect, WanCoreSigmas
from .video import WanCoreDecode, WanCoreVideoSize

register_model_folders()
register_lora_key_aliases()

NODE_CLASS_MAPPINGS = {
    "WanCoreLoadTextEncoder": WanCoreLoadTextEncoder,
    "WanCoreLoadDiT": WanCoreLoadDiT,
    "WanCoreLoadVAE": WanCoreLoadVAE,
    "WanCoreLoraLoader": WanCoreLoraLoader,
    "WanCoreEncodePrompts": WanCoreEncodePrompts,
    "WanCoreVideoSize": WanCoreVideoSize,
    "WanCoreSampler": WanCoreSampler,
    "WanCoreSamplerSelect": WanCoreSamplerSelect,
    "WanCoreSigmas": WanCoreSigmas,
    "WanCoreNoise": WanCoreNoise,
    "WanCoreExpertGuider": WanCoreExpertGuider,
    "WanCoreDecode": WanCoreDecode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "WanCoreLoadTextEncoder": "Wan Load Text Encoder (umt5)",
    "WanCoreLoadDiT": "Wan Load DiT (safetensors / GGUF)",
    "WanCoreLoadVAE": "Wan Load VAE",
    "WanCoreLoraLoader": "Wan LoRA Loader",
    "WanCoreEncodePrompts": "Wan Encode Prompts",
    "WanCoreVideoSize": "Wan Video Size",
    "WanCoreSampler": "Wan Sampler",
    "WanCoreSamplerSelect": "Wan Sampler Select (official solvers)",
    "WanCoreSigmas": "Wan Sigmas (official grid)",
    "WanCoreNoise": "Wan Noise (seed + i)",
    "WanCoreExpertGuider": "Wan A14B Expert Guider",
    "WanCoreDecode": "Wan Decode",
}
