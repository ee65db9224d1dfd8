"""The Wan2.1 (16-channel, 4x8x8) and Wan2.2 (48-channel, 4x16x16) causal video VAEs.

Parameter names follow the official checkpoints (``wan_2.1_vae.safetensors``,
``wan2.2_vae.safetensors``).  Encoding runs chunks of 1, 4, 4, ... frames and decoding one latent
frame at a time; every causal conv keeps the last frames of its input in a per-call cache, so
memory depends on the frame size, not on the clip length.  Latents in and out are raw VAE means
(as ComfyUI's LATENT holds them); :mod:`wan_core.latent` has the normalisation the DiT uses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Dict

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..ops import layer_casts_weights

CACHE_T = 2
_REP = "first-chunk"  # marker: the upsampler has seen only the first chunk

# On the CPU, oneDNN's 3-D convolutions run 10-30% faster on channels-last tensors up to this width
# and slower above it (measured per shape on 2 AVX2 cores: 96-256 channels at 64-256 px faster,
# 384-512 channels slower), so the stages this narrow switch layout.  Other devices keep the
# default layout (not measured here).
CHANNELS_LAST_MAX_WIDTH = 256


def preferred_layout(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``x`` in the memory layout that convolutions ``channels`` wide run fastest in."""
    if x.device.type == "cpu" and channels <= CHANNELS_LAST_MAX_WIDTH:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x.contiguous()


@dataclass(frozen=True)
class WanVAEConfig:
    """Sizes of a Wan VAE; ``version`` 2.1 or 2.2, everything else read from tensor shapes."""

    version: str = "2.1"
    z_dim: int = 16
    dim: int = 96
    dec_dim: int = 96
    dim_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple = (False, True, True)

    @property
    def patch(self) -> int:
        """Pixel patchify factor before the encoder (Wan2.2 folds 2x2 pixels into channels)."""
        return 2 if self.version == "2.2" else 1

    @property
    def stride(self) -> tuple:
        """Pixels per latent element along (t, h, w)."""
        s = 2 ** (len(self.dim_mult) - 1) * self.patch
        return (4, s, s)


# -- layers -------------------------------------------------------------------------------------


def _spatial_conv_args(conv: nn.Conv3d) -> dict:
    """``F.conv2d`` arguments for one time tap of a 3-D conv (its spatial stride, padding, ...)."""
    return dict(stride=conv.stride[1:], padding=conv.padding[1:], dilation=conv.dilation[1:], groups=conv.groups)


@functools.lru_cache(maxsize=None)
def causal_conv3d_class(conv3d: type) -> type:
    """A causal (past-only in time) variant of the given Conv3d class, e.g. ``comfy.ops``' one."""

    class CausalConv3d(conv3d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # Only the time axis is padded here (causally: past frames or zeros); the spatial
            # zero padding stays inside the convolution, which is faster than a padded copy
            # (about 13% of a whole decode on CPU) and gives the same result.
            self.time_padding = 2 * self.padding[0]
            self.padding = (0, self.padding[1], self.padding[2])

        def forward(self, x, cache_x=None):
            """``cache_x``: the previous chunk's last input frames (a tensor or a tuple of them)."""
            parts = [] if cache_x is None else [cache_x] if torch.is_tensor(cache_x) else list(cache_x)
            pad_t = self.time_padding - sum(p.shape[2] for p in parts)
            if x.shape[2] == 1 and pad_t >= 0 and self.time_padding == self.kernel_size[0] - 1 > 0 \
                    and self.stride[0] == 1 and not layer_casts_weights(self):
                if x.is_contiguous(memory_format=torch.channels_last_3d) and x.device.type == "cpu":
                    return self._by_time_tap(x, parts)
                if not parts:
                    # A lone first frame sees only zeros in the past: only the last time tap
                    # counts, a third of the work (ComfyUI's native VAE does the same).
                    return self._conv_forward(x, self.weight[:, :, -1:], self.bias)
            if pad_t > 0:
                zero = torch.zeros_like(x[:, :, :1])
                parts = [zero] * pad_t + parts
            if parts:
                x = torch.cat([p.to(x) for p in parts] + [x], dim=2)
            return super().forward(x)

        def _by_time_tap(self, x, parts):
            """One output frame as a 2-D convolution per time tap, summed in place: no concatenated
            copy of the past frames, and 15-30% faster than the 3-D call on channels-last CPU
            tensors (measured at 96-192 channels, 256-832 px).  Zero past frames are skipped."""
            past = [p[:, :, f] for p in parts for f in range(p.shape[2])]
            last = self.kernel_size[0] - 1
            kw = _spatial_conv_args(self)
            y = F.conv2d(x[:, :, 0], self.weight[:, :, last], self.bias, **kw)
            for j, frame in enumerate(past):
                y += F.conv2d(frame.to(x), self.weight[:, :, last - len(past) + j], None, **kw)
            return y.unsqueeze(2)

    return CausalConv3d


class RMSNormChannels(nn.Module):
    """Channel-first RMS norm (``F.normalize * sqrt(dim) * gamma``) as the Wan VAEs use."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x, silu: bool = False):
        """The norm, followed by SiLU when asked; one new tensor (in place after the division)."""
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(1e-12)
        gain = self.gamma.to(x) * self.scale
        if torch.is_grad_enabled():
            out = x / norm * gain
            return F.silu(out) if silu else out
        out = torch.div(x, norm).mul_(gain)
        return F.silu(out, inplace=True) if silu else out


def _last_frames(prev: tuple, x: torch.Tensor) -> tuple:
    """The last CACHE_T frames of ``prev`` followed by ``x``, without copying ``x`` when it is a
    tensor of its own (nothing changes it afterwards) rather than a view into a larger one."""
    n = x.shape[2]
    own = x._base is None
    if n >= CACHE_T:
        keep = x[:, :, -CACHE_T:]
        return (keep if n == CACHE_T and own else keep.clone(),)
    older, need = [], CACHE_T - n
    for p in reversed(prev):
        if need <= 0:
            break
        older.insert(0, p[:, :, -need:])
        need -= older[0].shape[2]
    return (*older, x if own else x.clone())


def _cached_call(conv, x, cache: Dict):
    """Run a causal conv with the frames kept from the previous chunk, then keep this chunk's last."""
    prev = cache.get(conv, ())
    out = conv(x, prev)
    cache[conv] = _last_frames(prev, x)
    return out


class ResidualBlock(nn.Module):
    def __init__(self, in_dim, out_dim, ops):
        super().__init__()
        Causal = causal_conv3d_class(ops.Conv3d)
        self.width = max(in_dim, out_dim)
        self.residual = nn.Sequential(
            RMSNormChannels(in_dim), nn.SiLU(), Causal(in_dim, out_dim, 3, padding=1),
            RMSNormChannels(out_dim), nn.SiLU(), nn.Dropout(0.0), Causal(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = Causal(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x, cache):
        x = preferred_layout(x, self.width)
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        h = self.shortcut(x)
        x = _cached_call(conv1, norm1(x, silu=True), cache)
        x = _cached_call(conv2, norm2(x, silu=True), cache)
        return x.add_(h) if not torch.is_grad_enabled() else x + h


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention, frame by frame."""

    def __init__(self, dim, ops):
        super().__init__()
        self.norm = RMSNormChannels(dim, images=True)
        self.to_qkv = ops.Conv2d(dim, dim * 3, 1)
        self.proj = ops.Conv2d(dim, dim, 1)

    def forward(self, x, cache=None):
        identity = x
        b, c, t, h, w = x.shape
        x = self.norm(x.transpose(1, 2).reshape(b * t, c, h, w))
        q, k, v = self.to_qkv(x).reshape(b * t, 1, c * 3, h * w).transpose(2, 3).chunk(3, dim=-1)
        x = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        x = self.proj(x.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w))
        return x.reshape(b, t, c, h, w).transpose(1, 2) + identity


class Resample(nn.Module):
    """2x spatial (and optionally 2x causal temporal) down- or up-sampling."""

    def __init__(self, dim, mode, ops, up_out_dim):
        super().__init__()
        self.mode = mode
        Causal = causal_conv3d_class(ops.Conv3d)
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          ops.Conv2d(dim, up_out_dim, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = Causal(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), ops.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = Causal(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x, cache):
        b, c, t, h, w = x.shape
        if self.mode == "upsample3d":
            prev = cache.get(self.time_conv)
            if prev is None:  # the first chunk (one frame) is not doubled in time
                cache[self.time_conv] = _REP
            else:
                prev = () if prev is _REP else prev  # after the first chunk: zeros in the past
                cache[self.time_conv] = _last_frames(prev, x)
                x = self.time_conv(x, prev)
                x = x.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, t * 2, h, w)
        t = x.shape[2]
        x = self.resample(x.transpose(1, 2).flatten(0, 1))
        x = x.unflatten(0, (b, t)).transpose(1, 2)
        if self.mode == "downsample3d":
            prev = cache.get(self.time_conv)
            if prev is None:  # the first frame passes through; keep it for the next chunk
                cache[self.time_conv] = x.clone()
            else:
                keep = x[:, :, -1:].clone()
                x = self.time_conv(torch.cat([prev[:, :, -1:], x], dim=2))
                cache[self.time_conv] = keep
        return x


class AvgDown3D(nn.Module):
    """Wan2.2 shortcut: average groups of space-time-to-channel folded pixels."""

    def __init__(self, in_channels, out_channels, factor_t, factor_s):
        super().__init__()
        self.out_channels, self.ft, self.fs = out_channels, factor_t, factor_s
        self.group = in_channels * factor_t * factor_s * factor_s // out_channels

    def forward(self, x):
        x = F.pad(x, (0, 0, 0, 0, (self.ft - x.shape[2] % self.ft) % self.ft, 0))
        b, c, t, h, w = x.shape
        ft, fs = self.ft, self.fs
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_channels, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Wan2.2 shortcut: repeat channels and unfold them into space-time."""

    def __init__(self, in_channels, out_channels, factor_t, factor_s):
        super().__init__()
        self.out_channels, self.ft, self.fs = out_channels, factor_t, factor_s
        self.repeats = out_channels * factor_t * factor_s * factor_s // in_channels

    def forward(self, x, first_chunk=False):
        x = x.repeat_interleave(self.repeats, dim=1)
        b, _, t, h, w = x.shape
        ft, fs = self.ft, self.fs
        x = x.view(b, self.out_channels, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1:] if first_chunk else x


class DownBlock(nn.Module):
    """Wan2.2 encoder stage: residual blocks, a resample, and an averaging shortcut."""

    def __init__(self, in_dim, out_dim, mult, temporal, down, ops):
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)
        layers = []
        for _ in range(mult):
            layers.append(ResidualBlock(in_dim, out_dim, ops))
            in_dim = out_dim
        if down:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d", ops, out_dim))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x, cache, first_chunk=False):
        shortcut = self.avg_shortcut(x)
        for layer in self.downsamples:
            x = layer(x, cache)
        return x + shortcut


class UpBlock(nn.Module):
    """Wan2.2 decoder stage: residual blocks, a resample, and a repeating shortcut."""

    def __init__(self, in_dim, out_dim, mult, temporal, up, ops):
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up else None
        layers = []
        d = in_dim
        for _ in range(mult):
            layers.append(ResidualBlock(d, out_dim, ops))
            d = out_dim
        if up:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", ops, out_dim))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x, cache, first_chunk=False):
        h = x
        for layer in self.upsamples:
            h = layer(h, cache)
        return h if self.avg_shortcut is None else h + self.avg_shortcut(x, first_chunk)


# -- encoder / decoder --------------------------------------------------------------------------


class _Head(nn.Sequential):
    """Norm, SiLU and the output conv.  The output has few channels (3, 12 or 2 x z_dim) against
    96-384 in, so on one-frame chunks the conv keeps the partial sums its time taps add to the next
    two output frames instead of its last two input frames: the same result, and its cache shrinks
    from 2 wide frames to 2 narrow ones (~300 MB less at 832x480 for the Wan2.1 decoder)."""

    def __init__(self, dim, out, ops):
        super().__init__(RMSNormChannels(dim), nn.SiLU(), causal_conv3d_class(ops.Conv3d)(dim, out, 3, padding=1))

    def forward(self, x, cache):
        x, conv = self[0](x, silu=True), self[2]
        if x.shape[2] != 1 or layer_casts_weights(conv) or conv.out_channels >= conv.in_channels:
            if isinstance(cache.get(conv), _PartialSums):
                raise RuntimeError("the VAE head was given several frames after one-frame chunks")
            return _cached_call(conv, x, cache)
        taps = conv.kernel_size[0]
        w = conv.weight.movedim(2, 0).flatten(0, 1)  # [taps * out, in, kh, kw]: tap k's outputs at k*out
        z = F.conv2d(x[:, :, 0], w.to(x), None, **_spatial_conv_args(conv)).unflatten(1, (taps, conv.out_channels))
        sums = cache.get(conv)
        if sums is None:  # the first frame: zeros in the past
            sums = _PartialSums([torch.zeros_like(z[:, 0]) for _ in range(taps - 1)])
        elif not isinstance(sums, _PartialSums):
            raise RuntimeError("the VAE head was given one frame after several-frame chunks")
        # output t = tap[last] * x_t + what x_{t-1}, x_{t-2} already added for it
        y = z[:, taps - 1] + sums[0]
        if conv.bias is not None:
            y += conv.bias.to(y)[:, None, None]
        cache[conv] = _PartialSums([sums[k + 1] + z[:, taps - 2 - k] for k in range(taps - 2)] + [z[:, 0].clone()])
        return y.unsqueeze(2)


class _PartialSums(list):
    """A head conv's cache on one-frame chunks: what the past frames add to the next outputs."""


def _middle(dim, ops):
    return nn.Sequential(ResidualBlock(dim, dim, ops), AttentionBlock(dim, ops), ResidualBlock(dim, dim, ops))


class Encoder(nn.Module):
    def __init__(self, cfg: WanVAEConfig, ops):
        super().__init__()
        dims = [cfg.dim * u for u in (1,) + tuple(cfg.dim_mult)]
        self.conv1 = causal_conv3d_class(ops.Conv3d)(3 * cfg.patch**2, dims[0], 3, padding=1)
        layers = []
        last = len(cfg.dim_mult) - 1
        for i, (din, dout) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = cfg.temporal_downsample[i] if i < len(cfg.temporal_downsample) else False
            if cfg.version == "2.2":
                layers.append(DownBlock(din, dout, cfg.num_res_blocks, temporal, i != last, ops))
                continue
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(din, dout, ops))
                din = dout
            if i != last:
                layers.append(Resample(dout, "downsample3d" if temporal else "downsample2d", ops, dout))
        self.downsamples = nn.Sequential(*layers)
        self.middle = _middle(dims[-1], ops)
        self.head = _Head(dims[-1], cfg.z_dim * 2, ops)

    def forward(self, x, cache):
        x = _cached_call(self.conv1, x, cache)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, cache)
        return self.head(x, cache)


class Decoder(nn.Module):
    def __init__(self, cfg: WanVAEConfig, ops):
        super().__init__()
        mult = tuple(cfg.dim_mult)
        dims = [cfg.dec_dim * u for u in (mult[-1],) + mult[::-1]]
        temporal_up = tuple(cfg.temporal_downsample)[::-1]
        self.conv1 = causal_conv3d_class(ops.Conv3d)(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], ops)
        layers = []
        last = len(mult) - 1
        for i, (din, dout) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = temporal_up[i] if i < len(temporal_up) else False
            if cfg.version == "2.2":
                layers.append(UpBlock(din, dout, cfg.num_res_blocks + 1, temporal, i != last, ops))
                continue
            if i in (1, 2, 3):  # the 2.1 upsamplers halve the channels
                din = din // 2
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(din, dout, ops))
                din = dout
            if i != last:
                layers.append(Resample(dout, "upsample3d" if temporal else "upsample2d", ops, dout // 2))
        self.upsamples = nn.Sequential(*layers)
        self.head = _Head(dims[-1], 3 * cfg.patch**2, ops)

    def forward(self, x, cache, first_chunk=False, emit=None):
        """Decode one chunk of latent frames; output frames go to ``emit`` in order (or are returned).

        Depth first: once a temporal upsampler has doubled the frames, the rest of the decoder runs
        on one frame at a time, so no full-resolution activation ever holds more than one frame
        (per-frame cost is the same: the convolutions are as fast on one frame as on four).
        """
        chunks = []
        x = _cached_call(self.conv1, x, cache)
        for layer in self.middle:
            x = layer(x, cache)
        self._upsample_from(0, x, cache, first_chunk, emit or chunks.append)
        return None if emit else torch.cat(chunks, dim=2)

    def _upsample_from(self, start, x, cache, first_chunk, emit):
        for i in range(start, len(self.upsamples)):
            layer, frames = self.upsamples[i], x.shape[2]
            x = layer(x, cache, first_chunk) if isinstance(layer, UpBlock) else layer(x, cache)
            if x.shape[2] > frames:
                for f in range(x.shape[2]):
                    self._upsample_from(i + 1, x[:, :, f: f + 1], cache, first_chunk, emit)
                return
        emit(self.head(x, cache))


def _patchify(x, p):
    """Fold p x p pixel patches into channels (Wan2.2: 3 -> 12 channels), as the official layout."""
    return x if p == 1 else rearrange(x, "b c f (h q) (w r) -> b (c r q) f h w", q=p, r=p)


def _unpatchify(x, p):
    return x if p == 1 else rearrange(x, "b (c r q) f h w -> b c f (h q) (w r)", q=p, r=p)


class WanVAE(nn.Module):
    """Encoder, decoder and the 1x1 causal convs between them, for either VAE version."""

    def __init__(self, config: WanVAEConfig, operations=nn):
        super().__init__()
        self.config = config
        Causal = causal_conv3d_class(operations.Conv3d)
        self.encoder = Encoder(config, operations)
        self.conv1 = Causal(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = Causal(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder(config, operations)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, 4n+1, H, W] in [-1, 1] -> raw latent mean [B, z, n+1, H/s, W/s] (fp32)."""
        from ..sizes import check_video_shape  # noqa: PLC0415

        check_video_shape(video.shape, self.config)
        x = _patchify(video.to(self.dtype), self.config.patch)
        cache: Dict = {}
        chunks = [self.encoder(x[:, :, :1], cache)]
        for i in range(1, (x.shape[2] - 1) // 4 + 1):
            chunks.append(self.encoder(x[:, :, 1 + 4 * (i - 1): 1 + 4 * i], cache))
        mu, _log_var = self.conv1(torch.cat(chunks, dim=2)).chunk(2, dim=1)
        return mu.float()

    def decode(self, latent: torch.Tensor, on_frames=None, sink=None) -> Optional[torch.Tensor]:
        """Raw latent [B, z, T, h, w] -> video [B, 3, 4(T-1)+1, H, W] in [-1, 1] (fp32).

        ``on_frames(i, total)`` is called after each latent frame (progress, interruption).
        ``sink(frames, start)``, if given, receives each decoded chunk of frames [B, 3, n, H, W] (in
        [-1, 1], on the decode device) as it is made, instead of a whole video kept on the decode
        device: a caller moves them wherever they go (then nothing is returned).
        """
        if latent.shape[1] != self.config.z_dim:
            raise ValueError(
                f"latent has {latent.shape[1]} channels; this Wan{self.config.version} VAE takes {self.config.z_dim}. "
                "Use the VAE that matches the DiT (Wan2.1 VAE: 16 channels, Wan2.2 VAE: 48)."
            )
        x = self.conv2(latent.to(self.dtype))
        b, _, t, h, w = x.shape
        st, sh, sw = self.config.stride
        total = 1 + st * (t - 1)
        video = None if sink is not None else torch.empty(b, 3, total, h * sh, w * sw, device=x.device)
        done = 0

        def emit(frames):  # written straight into the output: no list of chunks, no final concat
            nonlocal done
            n = frames.shape[2]
            if sink is not None:
                sink(_unpatchify(frames, self.config.patch).float().clamp_(-1, 1), done)
            else:
                video[:, :, done: done + n].copy_(_unpatchify(frames, self.config.patch)).clamp_(-1, 1)
            done += n

        cache: Dict = {}
        for i in range(t):
            self.decoder(x[:, :, i: i + 1], cache, first_chunk=(i == 0), emit=emit)
            if on_frames is not None:
                on_frames(i + 1, t)
        assert done == total, (done, total)
        return video


def _tile_spans(n: int, tile: int, overlap: int) -> list:
    """(start, size) of the fewest tiles of at most ``tile`` that cover ``n`` with neighbours
    overlapping by at least ``overlap``, all the same size and evenly spread (no thin last tile
    that is mostly overlap)."""
    if n <= tile:
        return [(0, n)]
    count = -(-(n - overlap) // (tile - overlap))
    size = -(-(n + (count - 1) * overlap) // count)
    return [(round(i * (n - size) / (count - 1)), size) for i in range(count)]


def _ramp(length: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """Blend weights along one axis of a tile: linear ramps over the pixels shared with the
    neighbour before (``fade_in``) and after (``fade_out``)."""
    w = torch.ones(length)
    if fade_in:
        w[:fade_in] = torch.arange(1, fade_in + 1, dtype=torch.float32) / (fade_in + 1)
    if fade_out:
        ramp = torch.arange(fade_out, 0, -1, dtype=torch.float32) / (fade_out + 1)
        w[-fade_out:] = torch.minimum(w[-fade_out:], ramp)
    return w


def _axis_tiles(n: int, tile: int, overlap: int, scale: int) -> list:
    """(start, size, blend weights) in pixels for one axis; the ramps span each actual overlap."""
    spans = _tile_spans(n, tile, overlap)
    out = []
    for i, (start, size) in enumerate(spans):
        fade_in = spans[i - 1][0] + spans[i - 1][1] - start if i > 0 else 0
        fade_out = start + size - spans[i + 1][0] if i + 1 < len(spans) else 0
        out.append((start, size, _ramp(size * scale, fade_in * scale, fade_out * scale)))
    return out


def decode_tiled(vae: WanVAE, latent: torch.Tensor, tile: int = 32, overlap: int = 8, on_frames=None,
                 out_device=None) -> torch.Tensor:
    """Decode in spatial tiles of at most ``tile`` latent pixels that overlap by at least
    ``overlap`` and are cross-faded.

    Each tile is decoded over all frames with its own causal cache, so peak memory follows the
    tile size; its frames are blended into the output on ``out_device`` (default: the latent's) as
    they are made.  The fewest tiles that fit are used, evenly spread, so the work repeated in the
    overlaps is as small as the overlap allows.
    """
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    b, _, t, h, w = latent.shape
    out_device = latent.device if out_device is None else torch.device(out_device)
    s = vae.config.stride[1]
    frames = 1 + (t - 1) * vae.config.stride[0]
    if h <= tile and w <= tile:
        out = torch.empty(b, 3, frames, h * s, w * s, device=out_device)
        vae.decode(latent, on_frames, sink=lambda part, start: out[:, :, start: start + part.shape[2]].copy_(part))
        return out
    out = torch.zeros(b, 3, frames, h * s, w * s, device=out_device)
    weight = torch.zeros(1, 1, 1, h * s, w * s, device=out_device)
    rows, cols = _axis_tiles(h, tile, overlap, s), _axis_tiles(w, tile, overlap, s)
    done, total = 0, len(rows) * len(cols)
    for y0, th, wy in rows:
        for x0, tw, wx in cols:
            mask = (wy[:, None] * wx[None, :]).to(out_device)[None, None, None]
            ys, xs = slice(y0 * s, (y0 + th) * s), slice(x0 * s, (x0 + tw) * s)

            def blend(part, start, ys=ys, xs=xs, mask=mask):
                out[:, :, start: start + part.shape[2], ys, xs] += part.to(out_device) * mask

            vae.decode(latent[:, :, :, y0: y0 + th, x0: x0 + tw], sink=blend)
            weight[..., ys, xs] += mask
            done += 1
            if on_frames is not None:
                on_frames(done, total)
    return out.div_(weight)
