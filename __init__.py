"""Wan Video (wan_core) for ComfyUI: loaded by ComfyUI from custom_nodes/.

The model code is the standalone ``wan_core`` package; ``nodes`` adapts it to ComfyUI.
"""

try:
    import comfy  # noqa: F401  - present whenever ComfyUI loads this folder
except ImportError:
    comfy = None

if comfy is not None and __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # imported outside ComfyUI, or as a lone module (pytest collecting a clone in a folder such as
    # /tmp/tmp.x1y2, whose name is no package name): nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
