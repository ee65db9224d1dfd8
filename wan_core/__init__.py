"""wan_core: Wan2.1 / Wan2.2 video diffusion in plain PyTorch (no ComfyUI imports).

Families: ``dit`` (the diffusion transformer), ``vae``, ``text`` (umt5), ``gguf`` (quantized files),
``sampling`` (solvers and the loop); shared: ``ops`` (injectable layers), ``attention``,
``safetensors_io``, ``weights``, ``sizes``, ``latent``, ``errors``.  The ComfyUI adapter lives in
``nodes/``; everything here can be used and tested alone.
"""

from .dit import WanDiT, WanDiTConfig, config_from_state_dict, load_dit
from .errors import CheckpointError, ModelLayoutError
from .ops import cast_ops

__all__ = [
    "WanDiT", "WanDiTConfig", "ModelLayoutError", "config_from_state_dict", "load_dit", "cast_ops",
    "CheckpointError",
]
