"""Wan Video (wan_core) for ComfyUI: loaded by ComfyUI from custom_nodes/.

The model code is the standalone ``wan_core`` package; ``nodes`` adapts it to ComfyUI.
"""

try:
    import comfy  # noqa: F401  - present whenever ComfyUI loads this folder
except ImportError:  # imported outside ComfyUI (e.g. by test collection): nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
