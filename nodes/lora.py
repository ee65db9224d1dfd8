"""LoRA on the Wan MODEL, through ComfyUI's own LoRA machinery.

Our MODEL carries the native Wan state-dict names, so core's key map (``diffusion_model.*``,
kohya ``lora_unet_*``) and weight adapters (LoRA ``lora_up/down`` or PEFT ``lora_A/B`` with or
without ``alpha``, LoHa, LoKr, full ``diff`` / ``diff_b``) apply to it exactly as to the native
model; core ``LoraLoader`` / ``LoraLoaderModelOnly`` work as they are.

Two additions, for our model only:

- diffusers pipeline names (``transformer.blocks.N.attn1.to_q``, ``ffn.net.0.proj``, ...), which
  core maps for several models but not for Wan: added to core's key map for our model class, so
  core loaders read them too (``transformer.`` = the DiT / the A14B high-noise expert);
- ``Wan LoRA Loader``: the same patches, plus the choice of the ``transformer_2.`` (A14B low-noise
  expert) half of a pipeline LoRA, and a report: keys the model lacks (Wan2.1 I2V ``img_emb`` /
  ``k_img`` / ``v_img``) summarised once, a LoRA of another shape refused with the file name, the
  number of keys that fit and the first that do not, and a LoRA that fits nothing refused.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Tuple

import torch

import comfy.lora
import comfy.lora_convert
import comfy.utils
import folder_paths

from ..wan_core.dit.keymap import official_to_diffusers
from ..wan_core.safetensors_io import PICKLE_SUFFIXES, SafetensorsCheckpoint
from .core_model import WanCoreWAN21, WanCoreWAN22
from .host import file_identity, reading, require_finite

log = logging.getLogger("wan_core")

DIFFUSERS_PREFIXES = {"transformer (DiT / high-noise expert)": "transformer.",
                      "transformer_2 (A14B low-noise expert)": "transformer_2."}
_I2V_PARTS = ("img_emb", "k_img", "v_img", "norm_k_img")


def diffusers_aliases(base_model, prefix: str = "transformer.") -> Dict[str, str]:
    """{diffusers LoRA base name: model key} for every weight and bias of our Wan model."""
    out = {}
    for key in base_model.state_dict().keys():
        if not key.startswith("diffusion_model."):
            continue
        official = key[len("diffusion_model."):]
        leaf = official.rpartition(".")[2]
        name = official_to_diffusers(official)
        if leaf == "weight":
            base = name[: -len(".weight")]
            out[prefix + base] = key
            out["lora_" + (prefix + base).replace(".", "_")] = key  # kohya-style on diffusers names
        elif leaf != "bias":
            out[prefix + name] = key  # modulation / scale_shift_table
    return out


def _is_ours(model) -> bool:
    return isinstance(model, (WanCoreWAN21, WanCoreWAN22))


_core_model_lora_keys_unet = comfy.lora.model_lora_keys_unet


def lora_key_map(base_model, prefix: str = "transformer.", key_map=None) -> Dict[str, str]:
    """Core's key map for our model plus the diffusers names under ``prefix``."""
    key_map = _core_model_lora_keys_unet(base_model, {} if key_map is None else key_map)
    for alias, key in diffusers_aliases(base_model, prefix).items():
        key_map.setdefault(alias, key)
    return key_map


def _model_lora_keys_unet(model, key_map={}):
    if _is_ours(model):
        return lora_key_map(model, key_map=key_map)
    return _core_model_lora_keys_unet(model, key_map)


def register_lora_key_aliases() -> None:
    """Let core LoRA loaders read diffusers-named Wan LoRAs on our MODEL (native models untouched)."""
    if comfy.lora.model_lora_keys_unet is not _model_lora_keys_unet:
        comfy.lora.model_lora_keys_unet = _model_lora_keys_unet


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.missing: List[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("lora key not loaded: "):
            self.missing.append(msg[len("lora key not loaded: "):])


def load_patches(lora: Dict[str, torch.Tensor], key_map: Dict[str, str]) -> Tuple[dict, List[str]]:
    """Core's ``load_lora`` (same patches as core loaders), plus the LoRA keys it could not place."""
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        patches = comfy.lora.load_lora(comfy.lora_convert.convert_lora(lora), key_map, log_missing=True)
    finally:
        root.removeHandler(handler)
    return patches, handler.missing


def logical_shape(base_model, key: str) -> tuple:
    """A parameter's shape as the layer uses it (GGUF blocks report their dequantized shape)."""
    module_name, _, param = key.rpartition(".")
    module = comfy.utils.get_attr(base_model, module_name)
    if param == "weight" and getattr(module, "logical_shape", None) is not None:
        return tuple(module.logical_shape)
    return tuple(comfy.utils.get_attr(base_model, key).shape)


def patch_shape(patch) -> tuple | None:
    """The shape a patch produces (LoRA up x down, diff), or None when core's adapter decides it."""
    if isinstance(patch, tuple) and patch[0] == "diff":
        return tuple(patch[1][0].shape)
    weights = getattr(patch, "weights", None)
    if getattr(patch, "name", None) == "lora" and weights is not None:
        up, down = weights[0], weights[1]
        return (up.shape[0],) + ((down.shape[1],) if down.dim() == 2 else tuple(down.shape[1:]))
    return None


def mismatched(base_model, patches: dict) -> List[str]:
    bad = []
    for key, patch in patches.items():
        want, got = logical_shape(base_model, key), patch_shape(patch)
        if got is not None and (got[0] != want[0] or math.prod(got) != math.prod(want)):
            bad.append(f"{key} (LoRA {list(got)}, model {list(want)})")
    return bad


class WanCoreLoraLoader:
    DESCRIPTION = ("Applies a LoRA to a Wan MODEL (the same patches as core's LoRA loaders) and reports what it did: "
                   "every layout users download (ComfyUI / lightx2v 'diffusion_model.' with diff and diff_b, PEFT "
                   "lora_A/lora_B, kohya lora_unet_, diffusers 'transformer.' / 'transformer_2.', LoHa, LoKr). A LoRA "
                   "for another model is refused with the keys that do not fit. Chain one per LoRA; for Wan2.2 "
                   "A14B give each expert its own chain.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A Wan MODEL (Wan Load DiT, or a previous LoRA loader)."}),
            "lora_name": (folder_paths.get_filename_list("loras"), {"tooltip": "File in models/loras (.safetensors)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "LoRA strength; fractional and negative values work."}),
            "diffusers_part": (list(DIFFUSERS_PREFIXES), {
                "default": next(iter(DIFFUSERS_PREFIXES)),
                "tooltip": "Only for diffusers pipeline LoRAs: which transformer's keys to apply. A14B pipeline LoRAs "
                           "carry 'transformer.' (high-noise expert) and 'transformer_2.' (low-noise expert)."}),
        }}

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = "Wan Video (wan_core)/loaders"

    @classmethod
    def IS_CHANGED(cls, lora_name, **_):
        return file_identity("loras", lora_name, "")

    def load(self, model, lora_name, strength, diffusers_part=next(iter(DIFFUSERS_PREFIXES))):
        reading("loras", lora_name, "")
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        if path.lower().endswith(PICKLE_SUFFIXES):
            raise ValueError(f"{lora_name}: pickle files can run code when loaded and are never read here; use the "
                             ".safetensors version of this LoRA")
        require_finite(strength=strength)
        SafetensorsCheckpoint.open(path, what="LoRA")  # a truncated or foreign file: an error naming it
        lora = comfy.utils.load_torch_file(path, safe_load=True)
        bad = [k for k, t in lora.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise ValueError(f"{lora_name}: {len(bad)} of its tensors hold NaN or infinite values (e.g. {bad[:3]}); "
                             "the video would be black. Download the LoRA again or use another one.")
        return (apply_lora(model, lora, strength, lora_name, DIFFUSERS_PREFIXES[diffusers_part]),)


def apply_lora(model, lora: Dict[str, torch.Tensor], strength: float, name: str, prefix: str = "transformer."):
    """``model`` cloned with the LoRA's patches at ``strength``; errors and the report name ``name``."""
    base = model.model
    if not _is_ours(base):
        raise ValueError(f"{name}: Wan LoRA Loader patches a MODEL from Wan Load DiT; use core LoraLoader for "
                         f"{type(base).__name__}")
    patches, missing = load_patches(lora, lora_key_map(base, prefix))
    other = "transformer_2." if prefix == "transformer." else "transformer."
    other_part = [k for k in missing if k.startswith(other)]
    missing = [k for k in missing if not k.startswith(other)]
    if not patches:
        raise ValueError(f"{name}: none of its {len(lora)} tensors fit this Wan model (first: {sorted(lora)[:4]}). It "
                         "is a LoRA for another model (or for the other A14B expert of a diffusers pipeline LoRA: see "
                         "diffusers_part).")
    bad = mismatched(base, patches)
    if bad:
        raise ValueError(f"{name}: {len(patches) - len(bad)} of {len(patches)} patched weights fit this "
                         f"{base.diffusion_model.config.family}; {len(bad)} have other shapes, e.g. {bad[:3]}. The LoRA "
                         "was trained for a model of another size (e.g. a 14B LoRA on the 1.3B).")
    i2v = [k for k in missing if any(part in k for part in _I2V_PARTS)]
    rest = [k for k in missing if k not in i2v]
    if i2v:
        log.info("%s: skipped %d tensors for parts this text-to-video model lacks (image-to-video img_emb / k_img / "
                 "v_img); the rest applies", name, len(i2v))
    if rest:
        log.warning("%s: %d tensors did not match this Wan model and were skipped, e.g. %s", name, len(rest), rest[:4])
    if other_part:
        log.info("%s: left the %d '%s' tensors of this pipeline LoRA for the other expert", name, len(other_part), other)
    patched = model.clone()
    applied = patched.add_patches(patches, strength)
    log.info("%s: %d weights patched at strength %s", name, len(applied), strength)
    return patched
