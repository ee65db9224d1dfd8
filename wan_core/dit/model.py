"""The Wan diffusion transformer (DiT): one implementation for every Wan2.1/Wan2.2 T2V/TI2V model.

Module and parameter names follow the official checkpoints, so their state dicts load as they
are.  Numerics follow the official code: the time embedding, modulation, norms, the residual
stream and the output head run in fp32; the linears and attention run in ``compute_dtype``.
Timesteps are [B] (Wan2.1, Wan2.2 A14B) or [B, L] per token (Wan2.2 TI2V-5B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..attention import attention
from ..ops import run_layer
from .config import WanDiTConfig
from .hooks import BlockState, DiTHooks, Site

FP32 = torch.float32
# Text is the same at every sampling step, so its embedding and every block's cross-attention
# keys/values can be projected once per run. It pays for short clips (2-8% of a step, most of it
# for very short ones) and holds layers x 2 x [B, 512, dim]; past this many video tokens it is
# under 1% of a step and not worth the memory.
TEXT_KV_REUSE_MAX_TOKENS = 4096


@dataclass
class TextContext:
    """Projected text for every block: the embedded context and each block's cross-attention
    keys/values. Text is the same at every sampling step, so these are computed once per run."""

    embedded: torch.Tensor
    kv: List[Tuple[torch.Tensor, torch.Tensor]]

    @property
    def batch(self) -> int:
        return self.embedded.shape[0]

    @staticmethod
    def cat(first: "TextContext", second: "TextContext") -> "TextContext":
        """Stack two contexts along the batch (cond + uncond for batched CFG)."""
        return TextContext(torch.cat([first.embedded, second.embedded]),
                           [(torch.cat([k1, k2]), torch.cat([v1, v2])) for (k1, v1), (k2, v2) in zip(first.kv, second.kv)])


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """cos-first sinusoidal timestep embedding, computed in float64 as the official code does."""
    half = dim // 2
    t = t.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(t, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(FP32)


class RotaryEmbedding(nn.Module):
    """3-axis RoPE over (frame, height, width), head_dim split 44/42/42 for head_dim 128."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        third = head_dim // 6
        self.axis_dims = (head_dim - 4 * third, 2 * third, 2 * third)
        self.theta = theta
        self._cache: dict = {}

    def _axis_angles(self, n: int, axis_dim: int) -> torch.Tensor:
        freqs = 1.0 / torch.pow(self.theta, torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
        return torch.outer(torch.arange(n, dtype=torch.float64), freqs)

    def forward(self, grid: tuple, device: torch.device):
        """cos and sin, each [1, F*H*W, 1, head_dim/2] fp32, for a latent grid of (F, H, W) patches."""
        if torch.compiler.is_compiling():  # no module state changed inside a compiled graph
            return self._angles(grid, device)
        key = (tuple(grid), str(device))
        if key not in self._cache:
            self._cache = {key: self._angles(grid, device)}
        return self._cache[key]

    def _angles(self, grid: tuple, device: torch.device):
        f, h, w = grid
        at, ah, aw = (self._axis_angles(n, d) for n, d in zip(grid, self.axis_dims))
        angles = torch.cat(
            [
                at[:, None, None, :].expand(f, h, w, -1),
                ah[None, :, None, :].expand(f, h, w, -1),
                aw[None, None, :, :].expand(f, h, w, -1),
            ],
            dim=-1,
        ).reshape(1, f * h * w, 1, -1)
        return torch.cos(angles).to(device, FP32), torch.sin(angles).to(device, FP32)


def _attend(q, k, v, backend: str, hooks: Optional[DiTHooks], site: Optional[Site]) -> torch.Tensor:
    if hooks is not None and hooks.attention is not None:
        return hooks.attention(q, k, v, site)
    return attention(q, k, v, backend)


def _output_patches(out: torch.Tensor, hooks: Optional[DiTHooks], site: Optional[Site]) -> torch.Tensor:
    if hooks is not None:
        for fn in hooks.output_patches(site.kind):
            out = fn(out, site)
    return out


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x [B, L, heads, head_dim] (fp32 in, fp32 out)."""
    pairs = x.unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2)


class SelfAttention(nn.Module):
    """Self-attention with RMS qk-norm over the full width and RoPE on q and k."""

    def __init__(self, cfg: WanDiTConfig, operations, factory: Optional[dict] = None):
        super().__init__()
        dim, kw = cfg.dim, factory or {}
        self.num_heads = cfg.num_heads
        self.q = operations.Linear(dim, dim, **kw)
        self.k = operations.Linear(dim, dim, **kw)
        self.v = operations.Linear(dim, dim, **kw)
        self.o = operations.Linear(dim, dim, **kw)
        self.norm_q = operations.RMSNorm(dim, eps=cfg.eps, elementwise_affine=True, **kw) if cfg.qk_norm else nn.Identity()
        self.norm_k = operations.RMSNorm(dim, eps=cfg.eps, elementwise_affine=True, **kw) if cfg.qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1))

    def _project_q(self, x, dtype):
        return self._heads(run_layer(self.norm_q, run_layer(self.q, x, dtype), FP32))

    def _project_kv(self, context, dtype):
        k = self._heads(run_layer(self.norm_k, run_layer(self.k, context, dtype), FP32))
        v = self._heads(run_layer(self.v, context, dtype))
        return k, v

    def forward(self, x, rope, dtype, backend, hooks: Optional[DiTHooks] = None, site: Optional[Site] = None):
        cos, sin = rope
        x = x.to(dtype)  # one compute-dtype copy of the fp32 stream for q, k and v
        q = apply_rope(self._project_q(x, dtype), cos, sin).to(dtype)
        k, v = self._project_kv(x, dtype)
        k = apply_rope(k, cos, sin).to(dtype)
        out = _attend(q, k, v, backend, hooks, site)
        if hooks is not None:
            for fn in hooks.self_attn_patches:
                out = fn(out, q, k, site)
        return _output_patches(run_layer(self.o, out, dtype), hooks, site)


class CrossAttention(SelfAttention):
    """Unmasked attention from video tokens to the (512, zero-padded) text tokens."""

    def project_text(self, context, dtype):
        """Keys and values of the text, in the compute dtype (reusable across steps)."""
        k, v = self._project_kv(context, dtype)
        return k.to(dtype), v

    def forward(self, x, context, dtype, backend, kv=None, hooks: Optional[DiTHooks] = None, site: Optional[Site] = None):
        q = self._project_q(x, dtype).to(dtype)
        k, v = kv if kv is not None else self.project_text(context, dtype)
        out = _attend(q, k, v, backend, hooks, site)
        return _output_patches(run_layer(self.o, out, dtype), hooks, site)


def _pick(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of a per-timestep table [U, dim] for each token, via the [B, Lt] index -> [B, Lt, dim]."""
    return table[index]


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention and FFN, each modulated by the timestep (adaLN)."""

    def __init__(self, cfg: WanDiTConfig, operations, factory: Optional[dict] = None):
        super().__init__()
        dim, kw = cfg.dim, factory or {}
        self.norm1 = operations.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False, **kw)
        self.self_attn = SelfAttention(cfg, operations, kw)
        self.norm3 = (
            operations.LayerNorm(dim, eps=cfg.eps, elementwise_affine=True, **kw) if cfg.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = CrossAttention(cfg, operations, kw)
        self.norm2 = operations.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False, **kw)
        self.ffn = nn.Sequential(
            operations.Linear(dim, cfg.ffn_dim, **kw), nn.GELU(approximate="tanh"), operations.Linear(cfg.ffn_dim, dim, **kw)
        )
        self.modulation = nn.Parameter(torch.empty(1, 6, dim, **kw))

    def forward(self, x, e0, index, rope, context, dtype, backend, kv=None, hooks: Optional[DiTHooks] = None,
                site: Optional[Site] = None):
        # x: [B, L, dim] fp32 residual; e0: [U, 6, dim] fp32 per distinct timestep.
        e = self.modulation.to(device=x.device, dtype=FP32) + e0
        shift1, scale1, gate1, shift2, scale2, gate2 = (_pick(e[:, i], index) for i in range(6))
        self_site = cross_site = None
        if hooks is not None:
            self_site, cross_site = replace(site, kind="self"), replace(site, kind="cross")

        h = run_layer(self.norm1, x, FP32) * (1 + scale1) + shift1
        x = x + self.self_attn(h, rope, dtype, backend, hooks, self_site) * gate1

        x = x + self.cross_attn(run_layer(self.norm3, x, FP32), context, dtype, backend, kv, hooks, cross_site)
        if hooks is not None:
            for fn in hooks.cross_attn_patches:
                x = fn(x, site)

        h = run_layer(self.norm2, x, FP32) * (1 + scale2) + shift2
        h = F.gelu(run_layer(self.ffn[0], h, dtype), approximate="tanh")
        return x + run_layer(self.ffn[2], h, dtype) * gate2


class Head(nn.Module):
    """Final modulated LayerNorm and projection to patch pixels (fp32)."""

    def __init__(self, cfg: WanDiTConfig, operations, factory: Optional[dict] = None):
        super().__init__()
        kw = factory or {}
        self.norm = operations.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False, **kw)
        self.head = operations.Linear(cfg.dim, cfg.out_channels * math.prod(cfg.patch_size), **kw)
        self.modulation = nn.Parameter(torch.empty(1, 2, cfg.dim, **kw))

    def forward(self, x, e, index):
        table = self.modulation.to(device=x.device, dtype=FP32) + e.unsqueeze(1)
        shift, scale = _pick(table[:, 0], index), _pick(table[:, 1], index)
        return run_layer(self.head, run_layer(self.norm, x, FP32) * (1 + scale) + shift, FP32)


class WanDiT(nn.Module):
    """The Wan DiT.  ``operations`` decides how weights are stored and cast (default ``torch.nn``).

    ``device`` / ``dtype`` are passed to every layer and parameter as it is created (a host that
    loads state dicts into ready-made layers, as ComfyUI does, sets the storage dtype this way; the
    patch embedding is always fp32, as in the official and ComfyUI models). Left None, layers are
    created as ``operations`` makes them (wan_core's loaders build on the meta device and assign).
    """

    def __init__(
        self,
        config: WanDiTConfig,
        operations=nn,
        compute_dtype: torch.dtype = FP32,
        attention_backend: str = "sdpa",
        device=None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        cfg = self.config = config
        self.compute_dtype = compute_dtype
        self.attention_backend = attention_backend
        dim = cfg.dim
        kw = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        self.patch_embedding = operations.Conv3d(
            cfg.in_channels, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size,
            **({**kw, "dtype": FP32} if dtype is not None else kw)
        )
        self.text_embedding = nn.Sequential(
            operations.Linear(cfg.text_dim, dim, **kw), nn.GELU(approximate="tanh"), operations.Linear(dim, dim, **kw)
        )
        self.time_embedding = nn.Sequential(
            operations.Linear(cfg.freq_dim, dim, **kw), nn.SiLU(), operations.Linear(dim, dim, **kw)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), operations.Linear(dim, dim * 6, **kw))
        self.blocks = nn.ModuleList(TransformerBlock(cfg, operations, kw) for _ in range(cfg.num_layers))
        self.head = Head(cfg, operations, kw)
        self.rope = RotaryEmbedding(cfg.head_dim)

    # -- inputs -------------------------------------------------------------------------------

    def embed_text(self, context) -> torch.Tensor:
        """Zero-pad text embeddings [B, <=512, text_dim] (or a list of [L_i, text_dim]) to 512 and project."""
        cfg, dtype = self.config, self.compute_dtype
        rows = list(context) if isinstance(context, (list, tuple)) else list(context.unbind(0))
        padded = []
        for i, u in enumerate(rows):
            if u.shape[-1] != cfg.text_dim:
                raise ValueError(
                    f"text embedding {i} has width {u.shape[-1]}; this DiT expects umt5-xxl embeddings of width "
                    f"{cfg.text_dim}"
                )
            u = u[: cfg.text_len]
            padded.append(torch.cat([u, u.new_zeros(cfg.text_len - u.shape[0], u.shape[1])]))
        ctx = torch.stack(padded)
        ctx = F.gelu(run_layer(self.text_embedding[0], ctx, dtype), approximate="tanh")
        return run_layer(self.text_embedding[2], ctx, dtype)

    def prepare_text(self, context) -> TextContext:
        """umt5 output -> a :class:`TextContext` (embedding + every block's text keys/values)."""
        embedded = self.embed_text(context)
        return TextContext(embedded, [b.cross_attn.project_text(embedded, self.compute_dtype) for b in self.blocks])

    def embed_time(self, t: torch.Tensor, batch: int, tokens: int):
        """(e [U, dim], e0 [U, 6, dim], index [B, 1 or L]) for timesteps [B] or per-token [B, L]."""
        if t.dim() == 0:
            t = t.expand(batch)
        if t.dim() == 1:
            t = t[:, None]
        elif t.shape[1] != tokens:
            raise ValueError(f"per-token timesteps have {t.shape[1]} entries; the latent has {tokens} tokens")
        if t.shape[0] != batch:
            raise ValueError(f"{t.shape[0]} timestep rows for a batch of {batch}")
        if torch.compiler.is_compiling():
            # no data-dependent branch and no torch.unique in a compiled graph: one embedding per
            # token (what native Wan2.2 always computes); identical values, more memory
            values, index = t.float().flatten(), torch.arange(t.numel(), device=t.device).view(t.shape)
        else:
            if t.shape[1] > 1 and bool((t == t[:, :1]).all()):
                t = t[:, :1]  # one value per sample: keep the modulation [B, 1, dim]
            if t.shape[1] == 1:  # one value per sample: no search for repeats
                values, index = t.float().flatten(), torch.arange(batch, device=t.device)[:, None]
            else:
                values, index = torch.unique(t.float(), return_inverse=True)
        sin = sinusoidal_embedding(self.config.freq_dim, values)
        e = run_layer(self.time_embedding[2], F.silu(run_layer(self.time_embedding[0], sin, FP32)), FP32)
        e0 = run_layer(self.time_projection[1], F.silu(e), FP32).unflatten(1, (6, self.config.dim))
        return e, e0, index

    # -- forward ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, t: torch.Tensor, context, text_embedded: bool = False,
                hooks: Optional[DiTHooks] = None) -> torch.Tensor:
        """See :meth:`predict` (subclasses that adapt the call signature for a host keep ``predict``)."""
        return self.predict(x, t, context, text_embedded, hooks)

    def predict(self, x: torch.Tensor, t: torch.Tensor, context, text_embedded: bool = False,
                hooks: Optional[DiTHooks] = None) -> torch.Tensor:
        """Predict the flow velocity for latents x [B, C, F, H, W] at timesteps t (0..1000).

        ``t`` is [B] or per-token [B, F*H/2*W/2]; ``context`` is umt5 output [B, <=512, 4096], a
        :class:`TextContext` from :meth:`prepare_text`, or (with ``text_embedded``) the result of
        :meth:`embed_text`.  ``hooks`` (:class:`~wan_core.dit.hooks.DiTHooks`) lets a host patch or
        replace parts of the forward.  Returns fp32 [B, C_out, F, H, W].
        """
        cfg = self.config
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"latent has shape {tuple(x.shape)}; this DiT ({cfg.family}) expects [B, {cfg.in_channels}, F, H, W]"
            )
        b, _, f, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        pad = (0, (-w) % pw, 0, (-h) % ph, 0, (-f) % pt)
        xp = F.pad(x, pad, mode="circular") if any(pad) else x
        tokens = run_layer(self.patch_embedding, xp, FP32)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)

        e, e0, index = self.embed_time(t.to(x.device), b, tokens.shape[1])
        kvs = [None] * len(self.blocks)
        if isinstance(context, TextContext):
            ctx, kvs = context.embedded, context.kv
        else:
            ctx = context if text_embedded else self.embed_text(context)
        if ctx.shape[0] != b:
            raise ValueError(f"{ctx.shape[0]} text embeddings for a batch of {b} latents")
        rope = self.rope(grid, x.device)

        if hooks is None:
            for block, kv in zip(self.blocks, kvs):
                tokens = block(tokens, e0, index, rope, ctx, self.compute_dtype, self.attention_backend, kv)
        else:
            tokens = self._hooked_blocks(tokens, BlockState(tokens, ctx, (e0, index), rope), kvs, grid, hooks)
        out = self.head(tokens, e, index)
        return self.unpatchify(out, grid)[:, :, :f, :h, :w]

    def _hooked_blocks(self, tokens, state: BlockState, kvs, grid, hooks: DiTHooks) -> torch.Tensor:
        if hooks.on_grid is not None:
            hooks.on_grid(grid)
        total = len(self.blocks)
        for i, (block, kv) in enumerate(zip(self.blocks, kvs)):
            site = Site(i, total)
            if hooks.on_block is not None:
                hooks.on_block(site)

            def run_block(st: BlockState, block=block, kv=kv, site=site):
                (e0, index), kv_used = st.modulation, st.text_kv if st.text_kv is not None else kv
                return block(st.x, e0, index, st.rope, st.context, self.compute_dtype, self.attention_backend, kv_used,
                             hooks, site)

            state = state.with_x(tokens)
            if i in hooks.block_replace:
                tokens = hooks.block_replace[i](state, run_block)
            else:
                tokens = run_block(state)
            for fn in hooks.after_block:
                tokens = fn(tokens, site)
        return tokens

    def unpatchify(self, x: torch.Tensor, grid) -> torch.Tensor:
        """[B, F*H*W, pt*ph*pw*c] -> [B, c, F*pt, H*ph, W*pw]."""
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        return rearrange(x, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)", f=f, h=h, w=w, pt=pt, ph=ph, pw=pw)
