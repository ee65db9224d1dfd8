"""Video size (empty LATENT, optional TI2V start image) and decoding nodes."""

from __future__ import annotations

import logging
import os

import torch

import comfy.model_management as mm
import comfy.utils

from ..wan_core.sizes import ASPECT_RATIOS, TIER_PIXELS, pixel_multiple, preset_size, snap_video_size
from ..wan_core.vae import decode_bytes, decode_tiled, encode_bytes

log = logging.getLogger("wan_core")
CATEGORY = "Wan Video (wan_core)"


def _fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE [N, H, W, 3] (0..1) -> first frame as [1, 3, 1, height, width] in [-1, 1]: center-cropped to
    the aspect and resized as core's Wan22ImageToVideoLatent does (``common_upscale``, bilinear), so a
    start image gives the same latent through either node."""
    x = comfy.utils.common_upscale(image[:1].movedim(-1, 1).float(), width, height, "bilinear", "center")
    return (x * 2 - 1).unsqueeze(2)


class WanCoreVideoSize:
    DESCRIPTION = ("An empty video latent for the VAE's model family, sized by width/height/frames or an aspect "
                   "preset. Sizes snap to what the models accept (multiples of 16 for Wan2.1, 32 for Wan2.2; "
                   "frames 4n+1) and the snapping is reported. Optional start image for the Wan2.2 TI2V-5B.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("WANCORE_VAE", {"tooltip": "Decides latent channels and stride (Wan2.1: 16ch, /8; Wan2.2: 48ch, /16)."}),
            "aspect_ratio": (["custom"] + list(ASPECT_RATIOS), {
                "default": "custom", "tooltip": "custom uses width/height; a preset uses the resolution tier."}),
            "resolution": (list(TIER_PIXELS), {"default": "480p", "tooltip": "Tier for aspect presets: 480p (832x480) "
                                                                          "or 720p (1280x720; 1280x704 for the 5B)."}),
            "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16, "tooltip": "Pixels (custom)."}),
            "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16, "tooltip": "Pixels (custom)."}),
            "frames": ("INT", {"default": 81, "min": 1, "max": 1025, "step": 4,
                               "tooltip": "Video length; snapped to 4n+1 (81 = 5 s at 16 fps, 121 = 5 s at 24 fps)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos per run."}),
        }, "optional": {
            "start_image": ("IMAGE", {"tooltip": "Wan2.2 TI2V-5B only: the first frame of the video."}),
        }}

    RETURN_TYPES = ("LATENT", "INT", "INT", "INT")
    RETURN_NAMES = ("latent", "width", "height", "frames")
    OUTPUT_TOOLTIPS = ("Empty latent in raw VAE space, layout [B, C, T, H, W] as core Wan nodes use.",
                       "Final width", "Final height", "Final frame count")
    FUNCTION = "make"
    CATEGORY = CATEGORY

    def make(self, vae, aspect_ratio, resolution, width, height, frames, batch_size, start_image=None):
        cfg = vae.model.config
        multiple = pixel_multiple(cfg.stride[1])
        if aspect_ratio != "custom":
            width, height = preset_size(aspect_ratio, resolution, multiple)
        size = snap_video_size(width, height, frames, multiple)
        for note in size.notes:
            log.warning("Wan video size: %s", note)
        t, h, w = size.latent_shape(cfg.stride)
        check_fits(vae, size, (batch_size, cfg.z_dim, t, h, w))
        latent = {"samples": torch.zeros(batch_size, cfg.z_dim, t, h, w, device=mm.intermediate_device())}
        if start_image is not None:
            if cfg.z_dim != 48:
                raise ValueError("a start image needs the Wan2.2 VAE (TI2V-5B); the Wan2.1 text-to-video models have "
                                 "no image input")
            pixels = _fit_image(start_image, size.width, size.height)
            device = vae.load(encode_bytes(cfg, pixels.shape, vae.model.dtype))
            pixels = pixels.to(device)
            with torch.no_grad():
                z = vae.model.encode(pixels).to(mm.intermediate_device()).repeat(batch_size, 1, 1, 1, 1)
            # core's TI2V convention (Wan22ImageToVideoLatent): the encoded frame in the latent, a noise
            # mask that keeps it, and the empty frames stored so they normalise to zero
            import comfy.latent_formats

            mask = torch.ones(batch_size, 1, t, h, w, device=latent["samples"].device)
            mask[:, :, :1] = 0.0
            empty = comfy.latent_formats.Wan22().process_out(torch.zeros_like(latent["samples"]))
            latent["samples"] = empty * mask + latent["samples"] * (1.0 - mask)
            latent["samples"][:, :, :1] = z
            latent["noise_mask"] = mask
        # the size it really made, in the server's history for clients (python -m wan_client's manifest)
        return {"ui": {"wan_video_size": [{"width": size.width, "height": size.height, "frames": size.frames,
                                           "batch": batch_size}]},
                "result": (latent, size.width, size.height, size.frames)}


def check_fits(vae, size, latent_shape) -> None:
    """Refuse, before anything is allocated, a video whose decode cannot fit this machine: the
    decoder's working memory on the VAE device (its measured estimate, per frame size) and the
    finished frames in memory (all of them, as IMAGE). Names the estimate and what fits instead."""
    cfg = vae.model.config
    batch = latent_shape[0]
    pixel_bytes = 3 * torch.finfo(mm.intermediate_dtype()).bits // 8  # an IMAGE pixel
    frame_bytes = size.width * size.height * pixel_bytes
    frames_bytes = batch * size.frames * frame_bytes
    # the least the decoder can work with: core's fallback tiles (an untiled decode that does not fit
    # falls back to them on a GPU); what cannot fit even so is refused
    work = decode_bytes(cfg, latent_shape, vae.model.dtype, tile=max(1, FALLBACK_TILE_PX // cfg.stride[1]))
    device = vae.patcher.load_device
    ram_total = mm.get_total_memory(torch.device("cpu"))
    frames_text = f"the {batch * size.frames} frames take {frames_bytes / 2**30:.1f} GiB"
    problems = []
    if device.type == "cpu":  # one memory holds the frames and the decoder's working memory
        same = True
        if frames_bytes + work > 0.8 * ram_total:
            problems.append(f"{frames_text} and decoding at least {work / 2**30:.1f} GiB more, of "
                            f"{ram_total / 2**30:.1f} GiB of RAM")
    else:
        same = False
        device_total = mm.get_total_memory(device)
        if work > device_total:
            problems.append(f"decoding needs at least {work / 2**30:.1f} GiB on {device} even in "
                            f"{FALLBACK_TILE_PX} px tiles (of {device_total / 2**30:.1f} GiB)")
        if frames_bytes > 0.8 * ram_total:
            problems.append(f"{frames_text} of RAM (of {ram_total / 2**30:.1f} GiB)")
    if not problems:
        return
    hints = []
    if same or frames_bytes > 0.8 * ram_total:  # the frames are what the RAM cannot hold
        max_frames = max(1, int((0.8 * ram_total - (work if same else 0)) // max(1, batch * frame_bytes)))
        max_frames = max(1, (max_frames - 1) // 4 * 4 + 1)
        max_pixels = int(0.8 * ram_total / max(1, batch * size.frames * pixel_bytes))
        hints.append(f"at this size at most {max_frames} frames per batch fit; at {size.frames} frames at most about "
                     f"{max_pixels // 1000}k pixels per frame (e.g. {int((max_pixels * 16 / 9) ** 0.5)}x"
                     f"{int((max_pixels * 9 / 16) ** 0.5)}); or a smaller batch")
    else:  # the decoder's working memory follows the frame size, not the length
        hints.append("a smaller frame size (the decoder's memory follows the frame size, not the length)")
    raise ValueError(f"{size.width}x{size.height}, {size.frames} frames, batch {batch} does not fit this machine: "
                     f"{'; '.join(problems)}. Use {'; '.join(hints)}.")


class WanCoreDecode:
    DESCRIPTION = ("Decodes a Wan video latent to IMAGE frames, one latent frame at a time (memory follows the "
                   "frame size, not the length). Tiling decodes large frames in overlapping, blended tiles.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("WANCORE_VAE", {"tooltip": "The VAE matching the DiT (Wan2.1 VAE for 1.3B/14B/A14B, Wan2.2 for 5B)."}),
            "samples": ("LATENT", {"tooltip": "Video latent (ours or a core Wan node's)."}),
            "tiled": ("BOOLEAN", {"default": False, "tooltip": "Decode in spatial tiles to save memory."}),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 32, "tooltip": (
                "Largest tile in pixels (core VAEDecodeTiled's default). The fewest tiles that fit are used, evenly "
                "spread; smaller tiles save memory but repeat more work in the overlaps.")}),
            "tile_overlap": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 16,
                                     "tooltip": "Least overlap between neighbouring tiles in pixels, cross-faded."}),
        }}

    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("frames", "videos")
    OUTPUT_IS_LIST = (False, True)
    OUTPUT_TOOLTIPS = ("All frames [B*F, H, W, 3] in 0..1, the batch's videos back to back (as core VAEDecode).",
                       "One IMAGE [F, H, W, 3] per video of the batch (per prompt line, in order): connect to "
                       "Create Video -> Save Video and ComfyUI makes and saves one video each.")
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, vae, samples, tiled, tile_size, tile_overlap):
        if tiled and tile_overlap >= tile_size:
            raise ValueError(f"tile_overlap ({tile_overlap}) must be smaller than tile_size ({tile_size}); "
                             "lower tile_overlap or raise tile_size")
        z = samples["samples"]
        if z.dim() != 5:
            raise ValueError(f"expected a video latent [B, C, T, H, W]; got shape {tuple(z.shape)} (an image latent?)")
        cfg = vae.model.config
        stride = cfg.stride[1]
        tile = max(1, tile_size // stride) if tiled else None
        device = vae.load(decode_bytes(cfg, z.shape, vae.model.dtype, tile))
        frames = 1 + cfg.stride[0] * (z.shape[2] - 1)
        out = torch.empty(z.shape[0] * frames, z.shape[3] * stride, z.shape[4] * stride, 3,
                          device=mm.intermediate_device(), dtype=mm.intermediate_dtype())
        bar = comfy.utils.ProgressBar(z.shape[0] * z.shape[2])
        with torch.no_grad():
            for i in range(z.shape[0]):
                zi = z[i: i + 1].to(device)
                step = lambda k, n, i=i: (mm.throw_exception_if_processing_interrupted(),  # noqa: E731
                                          bar.update_absolute(i * z.shape[2] + min(k, z.shape[2]), z.shape[0] * z.shape[2]))
                target = out[i * frames: (i + 1) * frames]
                if tile is not None:
                    self._tiled(vae, zi, tile, tile_overlap // stride, step, target)
                    continue
                if self._whole(vae, zi, step, target):
                    continue
                # out of memory: retried in tiles, as core's VAEDecode does, only now that the failed
                # attempt's exception (whose traceback held its activations and causal cache) is gone
                fallback = max(1, FALLBACK_TILE_PX // stride)
                log.warning("Wan Decode: out of memory decoding %dx%d frames whole; retrying in tiles of %d px "
                            "(overlap %d px)", target.shape[2], target.shape[1], fallback * stride,
                            fallback // 4 * stride)
                mm.soft_empty_cache()
                self._tiled(vae, zi, fallback, fallback // 4, step, target)
        return (out, [out[i * frames: (i + 1) * frames] for i in range(z.shape[0])])

    @staticmethod
    def _whole(vae, z, step, target) -> bool:
        """Decode ``z`` untiled into ``target``; False when the device ran out of memory. Any other
        error propagates. The caller retries after this returns, outside the ``except`` block: a
        pending exception keeps every frame of the failed decode (and the tensors they hold) alive."""
        try:
            vae.model.decode(z, step, sink=lambda part, start: _to_images(part, start, target, vae.source))
        except Exception as e:  # noqa: BLE001 - what is not an out-of-memory error is raised again
            mm.raise_non_oom(e)
            return False
        return True

    @staticmethod
    def _tiled(vae, z, tile, overlap, step, target):
        video = decode_tiled(vae.model, z, tile, overlap, step, out_device=target.device)
        _to_images(video, 0, target, vae.source)


FALLBACK_TILE_PX = 256  # core's tile for its out-of-memory fallback (256 px, overlap a quarter)


def _to_images(part: torch.Tensor, start: int, target: torch.Tensor, source: str = "the VAE") -> None:
    """Decoded frames [1, 3, n, H, W] in [-1, 1] -> IMAGE rows start..start+n of ``target`` (0..1), moved
    off the decode device as they are made; non-finite frames (black once clamped) stop the decode."""
    if not bool(torch.isfinite(part).all()):
        raise ValueError(f"the VAE {os.path.basename(str(source))} decoded NaN or infinite pixels: its weights hold "
                         "non-finite values (download the file again), the latent is broken, or its dtype overflows "
                         "(try dtype fp32 or bf16)")
    frames = part[0].float().add_(1).div_(2).clamp_(0, 1).permute(1, 2, 3, 0)
    target[start: start + frames.shape[0]].copy_(frames)
