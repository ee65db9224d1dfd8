"""umt5 from safetensors: ComfyUI / HF names, fp16 / bf16 / fp8 / ComfyUI scaled fp8, or a diffusers folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from ..errors import CheckpointError
from ..ops import FP8_DTYPES, attach_scale_weight
from ..safetensors_io import SafetensorsCheckpoint
from ..weights import assign_parameters
from .model import UMT5TextEncoder, build_umt5, umt5_config_from_shapes
from .tokenizer import PromptTokenizer, find_tokenizer


_MARKERS = ("scaled_fp8", "spiece_model")
_FP8_FORMATS = ("float8_e4m3fn", "float8_e5m2")


def _layer_quant_formats(ck: SafetensorsCheckpoint, keys) -> dict:
    """ComfyUI's per-layer quantization (the ``_quantization_metadata`` header or ``.comfy_quant``
    tensors): {layer name: format}."""
    formats = {}
    header = (ck.metadata or {}).get("_quantization_metadata")
    if header:
        try:
            formats.update({k: v.get("format") for k, v in json.loads(header).get("layers", {}).items()})
        except (ValueError, AttributeError) as e:
            raise CheckpointError(f"{ck.source.name}: unreadable _quantization_metadata header ({e})") from None
    for k in keys:
        if k.endswith(".comfy_quant"):
            formats[k[: -len(".comfy_quant")]] = json.loads(ck.read(k).numpy().tobytes()).get("format")
    return formats


def load_text_encoder_safetensors(
    path,
    tokenizer_path=None,
    compute_dtype: torch.dtype = torch.float32,
    weight_dtype: Optional[torch.dtype] = None,
    operations=None,
    device="cpu",
) -> UMT5TextEncoder:
    """Load umt5 from a safetensors file (HF/ComfyUI names, fp8/scaled fp8) or a diffusers folder."""
    ck = SafetensorsCheckpoint.open(path, what="umt5 text encoder", subfolder="text_encoder")
    source = ck.source.name
    keys = [k for k in ck.keys() if k not in _MARKERS]
    shapes = {k: ck.entries[k].shape for k in keys}
    config = umt5_config_from_shapes(shapes, source)
    tokenizer = None
    if "spiece_model" in ck.entries:
        tokenizer = PromptTokenizer.from_sentencepiece(ck.read("spiece_model").numpy().tobytes(), f"{source}:spiece_model")
    else:
        tokenizer = find_tokenizer(Path(path), Path(tokenizer_path) if tokenizer_path else None)
    if tokenizer is None:
        raise CheckpointError(
            f"{source} carries no tokenizer (no spiece_model tensor) and no tokenizer/ folder (spiece.model or "
            "tokenizer.json) was found next to it. Use ComfyUI's umt5_xxl_*.safetensors, which embed it, or put the "
            "diffusers tokenizer/ folder beside the text_encoder/ folder."
        )
    formats = _layer_quant_formats(ck, keys)
    unsupported = sorted({f for f in formats.values() if f not in _FP8_FORMATS})
    if unsupported:
        raise CheckpointError(
            f"{source} stores layers in ComfyUI's {', '.join(unsupported)} format, which this pack's text encoder "
            "does not read (fp8 e4m3fn / e5m2 per-layer files and scaled fp8 are read). Use umt5_xxl_fp16 or "
            "umt5_xxl_fp8_e4m3fn_scaled."
        )
    model = build_umt5(config, operations)
    tensors = {}
    for k in keys:
        if k.endswith(".comfy_quant") or k.endswith(".input_scale"):
            continue
        if k.endswith(".weight_scale") and k[: -len(".weight_scale")] in formats:  # per-layer fp8: the same scale
            attach_scale_weight(model, k[: -len(".weight_scale")], ck.read(k, torch.float32).to(device), tensors)
            continue
        if k.endswith(".scale_weight"):
            attach_scale_weight(model, k[: -len(".scale_weight")], ck.read(k, torch.float32).to(device), tensors)
            continue
        if k.endswith(".scale_input"):
            continue
        stored = ck.entries[k].dtype
        if stored in FP8_DTYPES:
            dtype = stored
        elif k.endswith("layer_norm.weight") or "relative_attention_bias" in k:
            dtype = compute_dtype
        else:
            dtype = weight_dtype or stored
        tensors[k] = ck.read(k, dtype).to(device)
    tensors.setdefault("encoder.embed_tokens.weight", tensors.get("shared.weight"))
    tensors.setdefault("shared.weight", tensors["encoder.embed_tokens.weight"])
    assign_parameters(model, tensors, source)
    model.encoder.embed_tokens = model.shared  # tied, as in the checkpoint
    return UMT5TextEncoder(model.eval(), tokenizer, compute_dtype)
