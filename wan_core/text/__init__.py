"""umt5-xxl prompts: the encoder, its tokenizers, and loaders for safetensors / diffusers / GGUF."""

from .loader import load_text_encoder
from .model import UMT5TextEncoder
from .tokenizer import PromptTokenizer, clean_prompt

__all__ = ["load_text_encoder", "UMT5TextEncoder", "PromptTokenizer", "clean_prompt"]
