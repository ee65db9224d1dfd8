"""The one attention entry point of the pack, with pluggable backends.

Every attention call in the DiT goes through :func:`attention`, so a faster kernel is added by
registering it here.  PyTorch's SDPA is the default and is always available; others register
only when their package imports.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_BACKENDS: Dict[str, AttentionFn] = {}


def register_backend(name: str, fn: AttentionFn) -> None:
    """Add a backend taking q, k, v as [B, L, heads, head_dim] and returning the same layout."""
    _BACKENDS[name] = fn


def available_backends() -> list[str]:
    """Names of the backends usable in this process, default first."""
    return list(_BACKENDS)


def _sdpa(q, k, v):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


register_backend("sdpa", _sdpa)

try:  # optional: SageAttention (CUDA only)
    from sageattention import sageattn as _sageattn

    register_backend("sage", lambda q, k, v: _sageattn(q, k, v, tensor_layout="NHD"))
except Exception:  # noqa: BLE001 - an optional backend that fails to import is just absent
    pass

try:  # optional: FlashAttention 2/3 (CUDA only, fp16/bf16 inputs)
    from flash_attn import flash_attn_func as _flash_attn_func

    register_backend("flash_attn", lambda q, k, v: _flash_attn_func(q, k, v))
except Exception:  # noqa: BLE001
    pass


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Global (unmasked) attention on [B, L, heads, head_dim] inputs; returns [B, Lq, heads*head_dim]."""
    try:
        fn = _BACKENDS[backend]
    except KeyError:
        raise ValueError(
            f"attention backend {backend!r} is not available; choose one of {available_backends()}"
        ) from None
    out = fn(q, k, v)
    return out.flatten(2)
