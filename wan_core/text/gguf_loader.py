"""umt5 from GGUF (city96's ``umt5-xxl-encoder-Q*.gguf``: llama.cpp T5 encoder names).

Tensor names are mapped with the ``gguf`` package's own T5 name table; the tokenizer is rebuilt
as a sentencepiece model from the ``tokenizer.ggml.*`` metadata (pieces, scores, types and the
precompiled normaliser), so no tokenizer file or network is needed.
"""

from __future__ import annotations

import re

import torch

from ..errors import CheckpointError, ModelLayoutError
from ..gguf.ops import GGUFEmbedding, gguf_ops
from ..gguf.reader import GGUFFile
from ..weights import assign_parameters
from .model import UMT5TextEncoder, build_umt5, umt5_config_from_shapes
from .tokenizer import PromptTokenizer

T5_ARCHITECTURES = ("t5encoder", "t5", "umt5")


def gguf_to_hf_names(names, n_blocks: int) -> dict:
    """{gguf name: HF UMT5 name} from the gguf package's T5 encoder tensor map."""
    import gguf

    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, n_blocks)
    hf_bases = ["shared", "encoder.final_layer_norm"]
    for i in range(n_blocks):
        p = f"encoder.block.{i}.layer."
        hf_bases += [p + "0.SelfAttention." + x for x in ("q", "k", "v", "o", "relative_attention_bias")]
        hf_bases += [p + "0.layer_norm", p + "1.layer_norm"]
        hf_bases += [p + "1.DenseReluDense." + x for x in ("wi_0", "wi_1", "wo")]
    reverse = {table.get_name(b): b for b in hf_bases}
    out = {}
    for name in names:
        base, _, suffix = name.rpartition(".")
        if base in reverse:
            out[name] = f"{reverse[base]}.{suffix}"
    return out


def tokenizer_from_gguf(f: GGUFFile) -> PromptTokenizer:
    """A sentencepiece (unigram) model rebuilt from ``tokenizer.ggml.*`` metadata."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens = f.field("tokenizer.ggml.tokens")
    if not tokens:
        raise CheckpointError(f"{f.path.name} has no tokenizer.ggml.tokens metadata; cannot rebuild the umt5 tokenizer.")
    scores = f.field("tokenizer.ggml.scores") or [0.0] * len(tokens)
    types = f.field("tokenizer.ggml.token_type") or [1] * len(tokens)
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.unk_id = int(f.field("tokenizer.ggml.unknown_token_id") or 2)
    proto.trainer_spec.eos_id = int(f.field("tokenizer.ggml.eos_token_id") or 1)
    proto.trainer_spec.pad_id = int(f.field("tokenizer.ggml.padding_token_id") or 0)
    proto.trainer_spec.bos_id = -1
    charsmap = f.field("tokenizer.ggml.precompiled_charsmap")
    proto.normalizer_spec.name = "nmt_nfkc"
    if charsmap:
        proto.normalizer_spec.precompiled_charsmap = bytes(int(b) & 0xFF for b in charsmap)
    proto.normalizer_spec.add_dummy_prefix = bool(f.field("tokenizer.ggml.add_space_prefix") if
                                                  f.field("tokenizer.ggml.add_space_prefix") is not None else True)
    proto.normalizer_spec.remove_extra_whitespaces = bool(f.field("tokenizer.ggml.remove_extra_whitespaces")
                                                          if f.field("tokenizer.ggml.remove_extra_whitespaces")
                                                          is not None else True)
    proto.normalizer_spec.escape_whitespaces = True
    for piece, score, kind in zip(tokens, scores, types):
        p = proto.pieces.add()
        p.piece, p.score, p.type = piece, float(score), int(kind)
    return PromptTokenizer.from_sentencepiece(proto.SerializeToString(), f"{f.path.name}:tokenizer.ggml")


def load_text_encoder_gguf(path, tokenizer_path=None, compute_dtype=torch.float32, operations=None, device="cpu"):
    """Load a umt5 encoder GGUF; quantized Linears and the embedding stay quantized in memory."""
    f = GGUFFile(path, what="umt5 text encoder GGUF")
    source = f.path.name
    if f.architecture not in T5_ARCHITECTURES:
        hint = "it is a Wan DiT: load it with the DiT loader" if f.architecture == "wan" else "use a umt5 encoder GGUF"
        raise ModelLayoutError(f"{source} is a GGUF of architecture {f.architecture!r}, not a T5/umt5 encoder; {hint}.")
    raw = f.tensors()
    n_blocks = len({m.group(1) for k in raw if (m := re.match(r"enc\.blk\.(\d+)\.", k))})
    names = gguf_to_hf_names(raw.keys(), n_blocks)
    if "token_embd.weight" not in names:
        raise ModelLayoutError(f"{source}: no token_embd.weight; not a llama.cpp T5 encoder layout.")
    shapes = {hf: raw[g].shape for g, hf in names.items()}
    config = umt5_config_from_shapes(shapes, source)
    model = build_umt5(config, operations or gguf_ops)
    with torch.device("meta"):
        model.shared = GGUFEmbedding(config.vocab_size, config.d_model)
    model.shared.out_dtype = compute_dtype
    state = {}
    for g, hf in names.items():
        t = raw[g]
        if t.quantized:
            module = model.get_submodule(hf.rsplit(".", 1)[0])
            module.set_quantized(t.data, t.qtype, t.shape)
            module.gguf_name = g
            state[hf] = module.weight.data
        else:
            value = t.as_float()
            state[hf] = value.to(compute_dtype) if ("norm" in hf or "relative_attention_bias" in hf) else value
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    model.encoder.embed_tokens = model.shared
    assign_parameters(model, {k: v.to(device) for k, v in state.items()}, source)
    model.encoder.embed_tokens = model.shared
    tokenizer = tokenizer_from_gguf(f)
    return UMT5TextEncoder(model.eval(), tokenizer, compute_dtype)
