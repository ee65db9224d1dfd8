"""The umt5-xxl text encoder: transformers' ``UMT5EncoderModel`` with per-call weight casting.

Weights keep their stored dtype (fp8 / ComfyUI scaled fp8 stay fp8: about 6.7 GB resident for
umt5-xxl instead of 11+ GB) because every Linear is swapped for an ``operations`` layer that casts
per call.  Output: [B, 512, 4096] fp32, zero past each prompt's last valid token (EOS included).
"""

from __future__ import annotations

import logging
import re
from typing import List, Sequence

import torch
from torch import nn

from ..errors import CheckpointError
from ..ops import CastEmbedding, _PerCallCast, apply_functions, call_functions, cast_ops, cast_workspace
from .tokenizer import TEXT_LEN, PromptTokenizer

log = logging.getLogger(__name__)


def _umt5_classes():
    from transformers import UMT5Config, UMT5EncoderModel
    from transformers.models.umt5.modeling_umt5 import UMT5DenseGatedActDense

    class CastingGatedFFN(UMT5DenseGatedActDense):
        """transformers casts the FFN activations to ``wo.weight.dtype`` (fp8 here): don't."""

        def forward(self, hidden_states):
            h = self.act(self.wi_0(hidden_states)) * self.wi_1(hidden_states)
            return self.wo(self.dropout(h))

    return UMT5Config, UMT5EncoderModel, CastingGatedFFN


class CastingLayerNorm(_PerCallCast, nn.Module):
    """transformers' UMT5LayerNorm with its weight brought to the input's device per call, so a host
    may keep it off the device (low-VRAM partial loading) like every other layer."""

    bias = None

    def forward(self, hidden_states):
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        weight = apply_functions(self.weight.to(hidden_states.device), call_functions(self, "weight"))
        if weight.dtype in (torch.float16, torch.bfloat16):
            hidden_states = hidden_states.to(weight.dtype)
        return weight * hidden_states


def umt5_config_from_shapes(shapes: dict, source: str):
    """A ``UMT5Config`` read from tensor shapes (tiny test models and umt5-xxl alike)."""
    UMT5Config, _, _ = _umt5_classes()
    if "shared.weight" not in shapes and "encoder.embed_tokens.weight" not in shapes:
        kind = "a Wan DiT" if any(k.startswith("blocks.") for k in shapes) else (
            "a Wan VAE" if any(k.startswith("decoder.") for k in shapes) else f"{len(shapes)} other tensors")
        raise CheckpointError(
            f"{source} is not a umt5 text encoder (no shared.weight / encoder.block.*); it looks like {kind}. "
            "Put umt5_xxl_*.safetensors (or a umt5 GGUF) in models/text_encoders."
        )
    vocab, d_model = shapes.get("shared.weight", shapes.get("encoder.embed_tokens.weight"))
    layers = {int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
    return UMT5Config(
        vocab_size=vocab, d_model=d_model, d_kv=inner // heads, num_heads=heads, num_layers=len(layers),
        d_ff=shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0], relative_attention_num_buckets=buckets,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, layer_norm_epsilon=1e-6,
    )


def build_umt5(config, operations=None):
    """``UMT5EncoderModel`` on the meta device with its Linears from ``operations`` (weights unset)."""
    _, UMT5EncoderModel, CastingGatedFFN = _umt5_classes()
    ops = operations or cast_ops
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            with torch.device("meta"):
                new = ops.Linear(module.in_features, module.out_features, bias=False)
            setattr(parent, name.rsplit(".", 1)[1], new)
        if type(module).__name__ == "UMT5DenseGatedActDense":
            module.__class__ = CastingGatedFFN
        # every other weighted module casts per call too: none is pinned to one device (the token and
        # relative-position tables are looked up where they are kept)
        if type(module).__name__ == "UMT5LayerNorm":
            module.__class__ = CastingLayerNorm
        if type(module) is nn.Embedding:
            module.__class__ = CastEmbedding
    return model.requires_grad_(False)


class UMT5TextEncoder(nn.Module):
    """Prompts -> umt5 embeddings [B, 512, d_model], zero past the valid tokens."""

    def __init__(self, model, tokenizer: PromptTokenizer, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.compute_dtype = compute_dtype

    compute_device = None  # where to run (a host sets its load device); None: where the table is

    def weight_device(self) -> torch.device:
        """Where to compute: the host's device when it set one (it may keep the large token table
        elsewhere under low-VRAM loading), else where the token table is."""
        return self.compute_device or self.model.shared.weight.device

    def tokenize(self, prompts: Sequence[str], what: str = "prompt") -> List[List[int]]:
        """Token ids per prompt (``what`` names them in the warning for a prompt that is too long)."""
        return [self.tokenizer(p, what=what) for p in prompts]

    @torch.no_grad()
    def encode_ids(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Token id lists -> [B, 512, d] fp32. Runs only up to the longest prompt (masked), then zero-pads."""
        longest = max(len(i) for i in ids)
        device = self.weight_device()
        input_ids = torch.full((len(ids), longest), self.tokenizer.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(ids), longest), dtype=torch.long, device=device)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq, device=device)
            mask[row, : len(seq)] = 1
        embeds = self.model.shared(input_ids).to(self.compute_dtype)
        with cast_workspace():
            hidden = self.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state.float()
        out = torch.zeros(len(ids), TEXT_LEN, hidden.shape[-1], device=device)
        out[:, :longest] = hidden * mask[..., None]
        return out

    def encode(self, prompts: Sequence[str], what: str = "prompt") -> torch.Tensor:
        """Prompts (English, Chinese, empty) -> [B, 512, d] fp32 embeddings."""
        return self.encode_ids(self.tokenize(prompts, what))
