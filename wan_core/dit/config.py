"""The DiT's configuration, read from tensor shapes (never from file names)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Tuple

from ..errors import ModelLayoutError

KNOWN_FAMILIES = {
    # (in_channels, dim, layers) -> name users know
    (16, 1536, 30): "Wan2.1-T2V-1.3B",
    (16, 5120, 40): "Wan2.1-T2V-14B / Wan2.2-T2V-A14B expert",
    (48, 3072, 30): "Wan2.2-TI2V-5B",
    (36, 5120, 40): "Wan2.2-I2V-A14B expert",
}

HEAD_DIM = 128


@dataclass(frozen=True)
class WanDiTConfig:
    """Sizes of a Wan DiT; every field is recoverable from the weights."""

    in_channels: int = 16
    out_channels: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    patch_size: Tuple[int, int, int] = (1, 2, 2)
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def family(self) -> str:
        """The released model this configuration belongs to, or a description of a custom one."""
        key = (self.in_channels, self.dim, self.num_layers)
        return KNOWN_FAMILIES.get(
            key, f"custom Wan DiT (in {self.in_channels}, dim {self.dim}, {self.num_layers} layers)"
        )

    @property
    def per_token_timesteps(self) -> bool:
        """Wan2.2 TI2V (48 channels) takes a timestep per token (start-image frames at t=0)."""
        return self.in_channels == 48

    @property
    def latent_channels(self) -> int:
        return self.out_channels

    @property
    def condition_channels(self) -> int:
        """Channels concatenated to the noisy latent: 20 for image-to-video DiTs (a 4-channel frame mask
        and the 16-channel latent of the start / end image), 0 for text-to-video and TI2V."""
        return self.in_channels - self.out_channels


def _describe(keys) -> str:
    sample = sorted(keys)[:6]
    return f"{len(keys)} tensors, e.g. {', '.join(sample)}" if sample else "no tensors"


def detect_other_kind(keys) -> str | None:
    """Name the kind of checkpoint ``keys`` look like when it is not a DiT (for error messages)."""
    keys = set(keys)
    if any(k.endswith("decoder.middle.0.residual.0.gamma") for k in keys) or "conv1.weight" in keys and any(
        k.startswith("decoder.") for k in keys
    ):
        return "a Wan VAE (put it in models/vae and load it with the VAE loader)"
    if any(k.startswith(("encoder.block.", "shared.", "enc.blk.", "token_embd")) for k in keys):
        return "a umt5/T5 text encoder (put it in models/text_encoders and use the text encoder loader)"
    if any(k.startswith(("first_stage_model.", "cond_stage_model.", "conditioner.")) for k in keys):
        return "a Stable Diffusion style checkpoint, not a Wan DiT"
    return None


def config_from_state_dict(shapes: Mapping[str, Tuple[int, ...]], source: str = "checkpoint") -> WanDiTConfig:
    """Read a :class:`WanDiTConfig` from ``{official key name: shape}``; refuse unknown layouts.

    ``source`` names the file in error messages.
    """
    keys = set(shapes)
    needed = ("patch_embedding.weight", "head.modulation", "head.head.weight", "blocks.0.ffn.0.weight",
              "text_embedding.0.weight", "time_embedding.0.weight")
    missing = [k for k in needed if k not in keys]
    if missing:
        other = detect_other_kind(keys)
        what = f"it looks like {other}" if other else f"found {_describe(keys)}"
        raise ModelLayoutError(
            f"{source} is not a Wan DiT: missing {', '.join(missing)}; {what}. "
            "Expected a Wan2.1/Wan2.2 diffusion model (official, ComfyUI or diffusers key names)."
        )
    if any(k.startswith("img_emb.") for k in keys):
        raise ModelLayoutError(
            f"{source} is a Wan image-to-video (I2V/FLF) DiT with a CLIP image branch; this pack runs "
            "the text-to-video models (Wan2.1 T2V, Wan2.2 T2V A14B, Wan2.2 TI2V-5B). Use a T2V/TI2V file."
        )
    if any(k.startswith("vace_") for k in keys):
        raise ModelLayoutError(f"{source} is a Wan VACE model, which this pack does not run; use a T2V/TI2V file.")

    pe = shapes["patch_embedding.weight"]
    if len(pe) != 5:
        raise ModelLayoutError(
            f"{source}: patch_embedding.weight has shape {tuple(pe)}, expected 5 dims "
            "[dim, in_channels, 1, 2, 2]. The file may be a GGUF export with a flattened patch embedding."
        )
    dim, in_channels, *patch = pe
    mod = shapes["head.modulation"]
    if tuple(mod) != (1, 2, dim):
        raise ModelLayoutError(f"{source}: head.modulation has shape {tuple(mod)}, expected (1, 2, {dim}).")
    if dim % HEAD_DIM:
        raise ModelLayoutError(
            f"{source}: hidden size {dim} is not a multiple of the head size {HEAD_DIM} every Wan model uses."
        )
    patch_volume = patch[0] * patch[1] * patch[2]
    head_out = shapes["head.head.weight"][0]
    if head_out % patch_volume:
        raise ModelLayoutError(f"{source}: head.head.weight rows {head_out} do not divide by the patch {patch}.")
    layer_ids = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    num_layers = max(layer_ids) + 1
    if layer_ids != set(range(num_layers)):
        gaps = sorted(set(range(num_layers)) - layer_ids)
        raise ModelLayoutError(f"{source}: transformer blocks {gaps[:5]} are missing (file incomplete?).")

    return WanDiTConfig(
        in_channels=in_channels,
        out_channels=head_out // patch_volume,
        dim=dim,
        ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
        num_heads=dim // HEAD_DIM,
        num_layers=num_layers,
        patch_size=tuple(patch),
        text_dim=shapes["text_embedding.0.weight"][1],
        freq_dim=shapes["time_embedding.0.weight"][1],
        qk_norm="blocks.0.self_attn.norm_q.weight" in keys,
        cross_attn_norm="blocks.0.norm3.weight" in keys,
    )
