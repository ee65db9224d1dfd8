"""A loaded Wan DiT as ComfyUI's own ``MODEL``: a ModelPatcher over the host's WAN21 / WAN22 BaseModel.

The BaseModel is the host's class (model sampling, latent format, memory estimate and condition
handling exactly as core declares them for Wan); only its ``diffusion_model`` is ours
(:class:`~.model_adapter.ComfyWanDiT`).  :class:`WanCorePatcher` is core's ModelPatcher except
for layers that keep their weights compact (GGUF blocks, ComfyUI scaled fp8): patches (LoRA)
for those are applied per call to the decoded weight, never merged into the stored one, so the
model stays its file's size in memory and the patch is applied at full precision.
"""

from __future__ import annotations

import logging
import weakref

import torch

import comfy.model_base
import comfy.model_patcher
import comfy.supported_models
import comfy.utils

from .gguf_layers import adjust_load_list, largest_decode_bytes

log = logging.getLogger("wan_core")


class _DecodesWeights:
    """BaseModel mixin: a GGUF DiT decodes each layer's weight at every call, resident or not, so
    the largest such decode is working memory the host's activation estimate must hold."""

    def memory_required(self, input_shape, cond_shapes={}):
        extra = largest_decode_bytes(self.diffusion_model, self.get_dtype_inference())
        return super().memory_required(input_shape, cond_shapes=cond_shapes) + extra


class WanCoreWAN21(_DecodesWeights, comfy.model_base.WAN21):
    """Core's WAN21 (Wan2.1 T2V, the A14B experts) around our DiT, as core makes it for these files
    (``image_to_video`` off, as core's ``WAN21_T2V``). A text-to-video DiT takes no image channels;
    an image-to-video one (Wan2.2 I2V-A14B: 36 input channels) takes core's own concatenation of the
    frame mask and the image latent (``WanImageToVideo``'s ``concat_latent_image`` / ``concat_mask``).

    ``unet_model`` is the factory BaseModel builds the diffusion model with (under the operations
    the host picks); without one the caller assigns ``diffusion_model`` (GGUF)."""

    image_to_video = False

    def __init__(self, model_config, device=None, unet_model=None):
        comfy.model_base.BaseModel.__init__(self, model_config, comfy.model_base.ModelType.FLOW, device=device,
                                            unet_model=unet_model)

    def concat_cond(self, **kwargs):
        if self.diffusion_model.config.condition_channels == 0:
            return None
        return super().concat_cond(**kwargs)


class WanCoreWAN22(_DecodesWeights, comfy.model_base.WAN22):
    """Core's WAN22 (TI2V-5B: 48 channels, per-frame timesteps from a start-image mask) around our DiT."""

    image_to_video = True

    def __init__(self, model_config, device=None, unet_model=None):
        comfy.model_base.BaseModel.__init__(self, model_config, comfy.model_base.ModelType.FLOW, device=device,
                                            unet_model=unet_model)

    def concat_cond(self, **kwargs):
        return None


def unet_config_for(cfg) -> dict:
    """Core's Wan ``unet_config`` for a wan_core config (memory estimates and sampling read it)."""
    return {"image_model": "wan2.1", "model_type": "t2v", "dim": cfg.dim, "in_dim": cfg.in_channels,
            "out_dim": cfg.out_channels, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
            "ffn_dim": cfg.ffn_dim}


def _patches_per_call(module) -> bool:
    return bool(getattr(module, "patches_per_call", False))


class WanCorePatcher(comfy.model_patcher.ModelPatcher):
    """ModelPatcher that patches compact (GGUF) layers per call instead of merging.

    The patch of such a layer lives in its ``patch_functions`` from load to unpatch, whatever the
    host does with ``weight_function`` as it moves layers on and off the device (``load`` wipes
    those lists for resident layers, ``partially_unload`` appends its own LowVramPatch to them);
    patches are keyed, so the layer applies each exactly once."""

    def patch_weight_to_device(self, key, device_to=None, inplace_update=False, return_weight=False, force_cast=False):
        module_name, _, param = key.rpartition(".")
        module = comfy.utils.get_attr(self.model, module_name) if module_name else None
        if key in self.patches and not return_weight and _patches_per_call(module) and param in ("weight", "bias"):
            module.patch_functions = {**module.patch_functions,
                                      param: comfy.model_patcher.LowVramPatch(key, self.patches)}
            return None
        return super().patch_weight_to_device(key, device_to=device_to, inplace_update=inplace_update,
                                              return_weight=return_weight, force_cast=force_cast)

    def _load_list(self, *args, **kwargs):
        """The host's per-module list with GGUF layers' real offload cost (see ``gguf_layers``)."""
        return adjust_load_list(self, super()._load_list(*args, **kwargs), self.model.get_dtype_inference())

    def pin_weight_to_device(self, key):
        """The host page-locks (``cudaHostRegister``) the weights it offloads, for fast copies. A GGUF
        weight still lies on the file's copy-on-write memory map (tensors 32-byte aligned, sharing
        pages): registering those pages fails or pins the file's cache, so the weight is first
        copied off the map into memory of its own, as ComfyUI-GGUF does before pinning."""
        weight = comfy.utils.get_attr(self.model, key)
        if isinstance(weight, torch.Tensor) and _on_file_map(self.model.diffusion_model, weight):
            weight.data = weight.data.clone()
        return super().pin_weight_to_device(key)

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        super().unpatch_model(device_to=device_to, unpatch_weights=unpatch_weights)
        if unpatch_weights:
            for module in self.model.modules():
                if _patches_per_call(module):
                    module.weight_function, module.bias_function, module.patch_functions = [], [], {}


def _on_file_map(dit, tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` lies in one of the memory maps the DiT's weights were read from."""
    if tensor.device.type != "cpu" or tensor.numel() == 0:
        return False
    ptr = tensor.data_ptr()
    return any(start <= ptr < end for start, end in getattr(dit, "mapped_ranges", ()))


def storage_dtype(dit) -> torch.dtype:
    """The dtype most of the DiT's weights are stored in (uint8 for GGUF blocks)."""
    return dit.blocks[0].ffn[0].weight.dtype


def wrap_dit(dit, load_device, offload_device, reload=None) -> WanCorePatcher:
    """The ``MODEL`` for a loaded :class:`ComfyWanDiT`. ``reload`` = (function, args) that loads it
    again (ComfyUI's ``cached_patcher_init``, used by multi-GPU work units to clone per device)."""
    cfg = dit.config
    unet_config = {**unet_config_for(cfg), "disable_unet_model_creation": True}
    wan22 = cfg.latent_channels == 48
    model_config = (comfy.supported_models.WAN22_T2V if wan22 else comfy.supported_models.WAN21_T2V)(unet_config)
    weights = storage_dtype(dit)
    model_config.set_inference_dtype(weights if weights.is_floating_point else dit.compute_dtype,
                                     None if weights == dit.compute_dtype else dit.compute_dtype)
    model = (WanCoreWAN22 if wan22 else WanCoreWAN21)(model_config, device=offload_device)
    model.diffusion_model = dit.to(offload_device)
    dit.owner = weakref.ref(model)  # the DiT reads its owner's patch uuid (text projection reuse)
    patcher = WanCorePatcher(model, load_device=load_device, offload_device=offload_device)
    if reload is not None:
        patcher.cached_patcher_init = reload
    return patcher

