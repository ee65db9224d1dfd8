"""Key names of Wan DiT checkpoints: official/ComfyUI <-> diffusers, and prefix stripping."""

from __future__ import annotations

import re
from typing import Iterable

# (official, diffusers) name fragments; {n} is a block index.  norm2/norm3 swap places.
_BLOCK_PAIRS = [
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
    ("modulation", "scale_shift_table"),
]
_TOP_PAIRS = [
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
    ("patch_embedding.", "patch_embedding."),
]

# Prefixes other tools wrap the official names in (ComfyUI checkpoints, some merges).
OFFICIAL_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.*)$")


def _swap(name: str, pairs, src: int) -> str | None:
    for pair in pairs:
        if name.startswith(pair[src]):
            return pair[1 - src] + name[len(pair[src]):]
    return None


def _convert(key: str, src: int) -> str:
    m = _BLOCK.match(key)
    if m:
        converted = _swap(m.group(2), _BLOCK_PAIRS, src)
        if converted is not None:
            return f"blocks.{m.group(1)}.{converted}"
        return key
    converted = _swap(key, _TOP_PAIRS, src)
    return key if converted is None else converted


def official_to_diffusers(key: str) -> str:
    """Official (ComfyUI) DiT key -> diffusers ``WanTransformer3DModel`` key."""
    return _convert(key, 0)


def diffusers_to_official(key: str) -> str:
    """diffusers ``WanTransformer3DModel`` key -> official (ComfyUI) DiT key."""
    return _convert(key, 1)


def is_diffusers_layout(keys: Iterable[str]) -> bool:
    """True when the keys use diffusers names (``condition_embedder``, ``attn1``, ``proj_out``)."""
    return any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in keys)


def strip_prefix(keys: Iterable[str]) -> str:
    """The wrapper prefix the official names sit under (``""`` when none)."""
    keys = list(keys)
    for prefix in OFFICIAL_PREFIXES:
        if any(k.startswith(prefix + "blocks.") or k.startswith(prefix + "patch_embedding") for k in keys):
            return prefix
    return ""


def to_official_names(keys: Iterable[str]) -> dict:
    """Map every file key to its official name: {file key: official key}."""
    keys = list(keys)
    prefix = strip_prefix(keys)
    names = {k: k[len(prefix):] for k in keys if k.startswith(prefix)}
    if is_diffusers_layout(names.values()):
        names = {k: diffusers_to_official(v) for k, v in names.items()}
    return names
