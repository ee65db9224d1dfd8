"""Video size rules shared by the VAE, the sampler and the nodes: one helper, used everywhere.

Frames must be 4n+1 (the VAEs are causal with 4x temporal stride).  Width and height must divide
by the VAE stride times the DiT's 2x2 patch: 16 for Wan2.1 models, 32 for the Wan2.2 TI2V-5B.
Snapping is reported (the returned notes), never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

# Aspect-ratio presets per resolution tier (width x height), as the official configs and
# ComfyUI templates use them; the 5B's 720p sizes are multiples of 32.
ASPECT_RATIOS = {
    "16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "21:9": (21, 9),
}
TIER_PIXELS = {"480p": 832 * 480, "720p": 1280 * 720}
KNOWN_SIZES = {
    ("16:9", "480p"): (832, 480), ("9:16", "480p"): (480, 832),
    ("16:9", "720p"): (1280, 720), ("9:16", "720p"): (720, 1280),
}


@dataclass
class VideoSize:
    """A size the models accept, with notes on any snapping that produced it."""

    width: int
    height: int
    frames: int
    notes: List[str] = field(default_factory=list)

    def latent_shape(self, stride: Tuple[int, int, int]) -> Tuple[int, int, int]:
        return ((self.frames - 1) // stride[0] + 1, self.height // stride[1], self.width // stride[2])


def pixel_multiple(spatial_stride: int, patch: int = 2) -> int:
    """What width/height must divide by: the VAE's spatial stride times the DiT's patch."""
    return spatial_stride * patch


def snap_frames(frames: int) -> int:
    """The nearest 4n+1 frame count (ties go up), at least 1."""
    if frames <= 1:
        return 1
    return 4 * round((frames - 1) / 4 + 1e-9) + 1


def _snap(v: int, multiple: int) -> int:
    return max(multiple, multiple * round(v / multiple))


def snap_video_size(width: int, height: int, frames: int, multiple: int) -> VideoSize:
    """Snap (width, height, frames) to what the models accept; ``notes`` say what changed."""
    size = VideoSize(_snap(width, multiple), _snap(height, multiple), snap_frames(frames))
    if (size.width, size.height) != (width, height):
        size.notes.append(
            f"size {width}x{height} snapped to {size.width}x{size.height} (must be a multiple of {multiple})"
        )
    if size.frames != frames:
        size.notes.append(f"frames {frames} snapped to {size.frames} (must be 4n+1)")
    return size


def preset_size(aspect: str, tier: str, multiple: int) -> Tuple[int, int]:
    """(width, height) for an aspect-ratio preset at a resolution tier, as a multiple of ``multiple``."""
    if aspect not in ASPECT_RATIOS:
        raise ValueError(f"unknown aspect ratio {aspect!r}; choose one of {', '.join(ASPECT_RATIOS)}")
    if tier not in TIER_PIXELS:
        raise ValueError(f"unknown resolution tier {tier!r}; choose one of {', '.join(TIER_PIXELS)}")
    known = KNOWN_SIZES.get((aspect, tier))
    if known and known[0] % multiple == 0 and known[1] % multiple == 0:
        return known
    aw, ah = ASPECT_RATIOS[aspect]
    unit = (TIER_PIXELS[tier] / (aw * ah)) ** 0.5
    return _snap(int(aw * unit), multiple), _snap(int(ah * unit), multiple)


def check_video_shape(shape, vae_config) -> None:
    """Refuse pixel videos the VAE cannot encode, naming the nearest valid values."""
    _, c, t, h, w = shape
    s = vae_config.stride
    if c != 3:
        raise ValueError(f"video has {c} channels; expected RGB (3)")
    if (t - 1) % s[0] or h % s[1] or w % s[2]:
        near = snap_video_size(w, h, t, s[1])
        raise ValueError(
            f"video of {t} frames at {w}x{h} does not fit the Wan{vae_config.version} VAE: frames must be 4n+1 and "
            f"sizes multiples of {s[1]}; nearest valid: {near.frames} frames at {near.width}x{near.height}"
        )
