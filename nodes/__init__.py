"""ComfyUI adapter for wan_core: node schemas, model files, memory manager, progress."""

from .host import register_model_folders
from .loaders import WanCoreLoadDiT, WanCoreLoadTextEncoder, WanCoreLoadVAE
from .lora import WanCoreLoraLoader, register_lora_key_aliases
from .prompts import WanCoreEncodePrompts
from .video import WanCoreDecode, WanCoreSampler, WanCoreVideoSize

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
    "WanCoreDecode": "Wan Decode",
}
