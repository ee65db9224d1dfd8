"""Neutral extension points of one WanDiT forward.

A host (ComfyUI's adapter in ``nodes/``, a research script) fills a :class:`DiTHooks` and passes
it to :meth:`WanDiT.forward`; the model calls each hook at a fixed place and knows nothing of who
set it.  With no hooks the forward takes its plain path.

Places, in the order one block meets them:

- ``attention(q, k, v, site)``: replaces the attention kernel (q/k/v ``[B, L, heads, head_dim]`` in
  the compute dtype; returns ``[B, Lq, heads * head_dim]``).
- ``self_attn_patches``: each ``fn(out, q, k, site) -> out`` on the self-attention result before
  its output projection (q/k after RoPE, ``[B, L, heads, head_dim]``).
- ``attn_output_patches[kind]`` (``"self"`` / ``"cross"``): each ``fn(out, site) -> out`` on an
  attention layer's output after its projection, before gate and residual.
- ``cross_attn_patches``: each ``fn(x, site) -> x`` on the residual stream right after the
  cross-attention is added.
- ``after_block``: each ``fn(x, site) -> x`` on the residual stream after a block.
- ``block_replace[i]``: ``fn(state, run_block) -> x`` runs instead of block ``i``; ``run_block(state)``
  runs the original block on a (possibly changed) :class:`BlockState`.
- ``on_grid(grid)`` once per forward with the (frames, height, width) patch grid; ``on_block(site)``
  before each block.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch


@dataclass(frozen=True)
class Site:
    """Where a hook is being called: block index, number of blocks, and which attention."""

    block_index: int
    total_blocks: int
    kind: str = "block"  # "self", "cross" or "block"


@dataclass
class BlockState:
    """Everything one block needs, as block replacement sees it.

    ``x``: residual stream [B, L, dim] fp32; ``context``: embedded text [B, 512, dim] (or None when
    ``text_kv`` carries the projected keys/values); ``modulation``: (e0 [U, 6, dim], index [B, L or 1]);
    ``rope``: (cos, sin).
    """

    x: torch.Tensor
    context: Optional[torch.Tensor]
    modulation: Tuple[torch.Tensor, torch.Tensor]
    rope: Tuple[torch.Tensor, torch.Tensor]
    text_kv: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def with_x(self, x: torch.Tensor) -> "BlockState":
        return replace(self, x=x)


@dataclass
class DiTHooks:
    attention: Optional[Callable] = None
    self_attn_patches: List[Callable] = field(default_factory=list)
    attn_output_patches: Dict[str, List[Callable]] = field(default_factory=dict)
    cross_attn_patches: List[Callable] = field(default_factory=list)
    after_block: List[Callable] = field(default_factory=list)
    block_replace: Dict[int, Callable] = field(default_factory=dict)
    on_grid: Optional[Callable] = None
    on_block: Optional[Callable] = None

    def output_patches(self, kind: str) -> List[Callable]:
        return self.attn_output_patches.get(kind, [])
