"""The Wan diffusion transformer: model, configuration from shapes, key names, loaders."""

from .config import WanDiTConfig, config_from_state_dict
from .loader import load_dit
from .model import TextContext, WanDiT

__all__ = ["WanDiT", "WanDiTConfig", "TextContext", "config_from_state_dict", "load_dit"]
