"""wan_core: Wan2.1 / Wan2.2 video diffusion in plain PyTorch (no ComfyUI imports).

The ComfyUI adapter lives in ``nodes/``; everything here can be used and tested alone.
"""

from .dit import WanDiT
from .dit_config import ModelLayoutError, WanDiTConfig, config_from_state_dict
from .dit_loader import load_dit
from .ops import cast_ops
from .safetensors_io import CheckpointError

__all__ = [
    "WanDiT", "WanDiTConfig", "ModelLayoutError", "config_from_state_dict", "load_dit", "cast_ops",
    "CheckpointError",
]
