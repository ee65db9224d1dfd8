"""Writers for GGUF files in the layouts of real ones (QuantStack Wan DiT, city96 umt5)."""

from __future__ import annotations

import numpy as np
import torch

import gguf
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

QUANTIZABLE = (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0)  # gguf.quants can make these
# byte offsets of the fp16 scale fields inside one block, per type (for random blocks)
_SCALE_FIELDS = {T.Q2_K: (-4, -2), T.Q3_K: (-2,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (-2,),
                 T.IQ4_XS: (0,), T.IQ4_NL: (0,), T.Q4_0: (0,), T.Q8_0: (0,), T.Q5_0: (0,), T.Q4_1: (0, 2),
                 T.Q5_1: (0, 2), T.TQ2_0: (-2,), T.TQ1_0: (-2,), T.Q8_K: ()}


def random_blocks(qtype, shape, seed=0, scale=1e-3) -> np.ndarray:
    """Random bytes for a tensor of logical ``shape``, with finite, small fp16 scale fields."""
    rng = np.random.default_rng(seed)
    block, type_size = GGML_QUANT_SIZES[qtype]
    rows = int(np.prod(shape[:-1]))
    n = rows * shape[-1] // block
    raw = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    for off in _SCALE_FIELDS[qtype]:
        off = off % type_size
        vals = rng.uniform(0.2, 1.0, n).astype(np.float16) * np.float16(scale)
        raw[:, off: off + 2] = np.frombuffer(vals.tobytes(), dtype=np.uint8).reshape(n, 2)
    return raw.reshape(rows, -1)


def quantize_or_random(t: torch.Tensor, qtype, seed: int) -> np.ndarray:
    if qtype in QUANTIZABLE:
        return gguf.quants.quantize(t.numpy().reshape(-1, t.shape[-1]), qtype)
    return random_blocks(qtype, tuple(t.shape), seed)


def dequantized(raw: np.ndarray, qtype, shape) -> torch.Tensor:
    return torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(shape).copy())


def write_wan_gguf(sd: dict, path, types: dict, prefix: str = "", orig_shape_metadata: bool = True,
                   arch: str = "wan") -> dict:
    """A Wan DiT GGUF like QuantStack's: F32 modulation, 5-D patch embedding stored 4-D (with
    ``comfy.gguf.orig_shape`` metadata), and per-tensor types from ``types`` (name -> type).
    Returns the fp32 state dict the file decodes to (via gguf's numpy dequantizer)."""
    w = gguf.GGUFWriter(str(path), arch)
    decoded = {}
    for i, (name, t) in enumerate(sorted(sd.items())):
        key = prefix + name
        qtype = types.get(name)
        if name == "patch_embedding.weight":
            flat = t.reshape(t.shape[0], t.shape[1], t.shape[2], -1).to(torch.float16)
            w.add_tensor(key, flat.numpy())
            if orig_shape_metadata:
                w.add_array(f"comfy.gguf.orig_shape.{key}", list(t.shape))
            decoded[name] = flat.float().reshape(t.shape)
        elif qtype is not None:
            raw = quantize_or_random(t, qtype, seed=i)
            w.add_tensor(key, raw, raw_dtype=qtype)
            try:
                decoded[name] = dequantized(raw, qtype, t.shape)
            except NotImplementedError:  # a type gguf cannot decode (for the "unsupported" test)
                decoded[name] = None
        elif "modulation" in name:
            w.add_tensor(key, t.float().numpy())
            decoded[name] = t.float()
        else:
            w.add_tensor(key, t.to(torch.float16).numpy())
            decoded[name] = t.to(torch.float16).float()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return decoded


def write_umt5_gguf(sd: dict, proto: bytes, path, linear_type=T.Q8_0) -> dict:
    """A umt5 encoder GGUF like city96's: llama.cpp T5 names and tokenizer.ggml.* metadata."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    n_blocks = len({k.split(".")[2] for k in sd if k.startswith("encoder.block.")})
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, n_blocks)
    w = gguf.GGUFWriter(str(path), "t5encoder")
    m = pb.ModelProto()
    m.ParseFromString(proto)
    w.add_tokenizer_model("t5")
    w.add_token_list([p.piece for p in m.pieces])
    w.add_token_scores([p.score for p in m.pieces])
    w.add_token_types([p.type for p in m.pieces])
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    w.add_unk_token_id(2)
    w.add_add_space_prefix(m.normalizer_spec.add_dummy_prefix)
    w.add_remove_extra_whitespaces(m.normalizer_spec.remove_extra_whitespaces)
    w.add_precompiled_charsmap(m.normalizer_spec.precompiled_charsmap)
    decoded = {}
    for i, (name, t) in enumerate(sorted(sd.items())):
        base, suffix = name.rsplit(".", 1)
        key = f"{names.get_name(base)}.{suffix}"
        if t.dim() == 2 and "relative_attention_bias" not in name and t.shape[-1] % 32 == 0:
            raw = quantize_or_random(t, linear_type, seed=i)
            w.add_tensor(key, raw, raw_dtype=linear_type)
            decoded[name] = dequantized(raw, linear_type, t.shape)
        else:
            w.add_tensor(key, t.float().numpy())
            decoded[name] = t.float()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return decoded


def quant_mix(sd: dict) -> dict:
    """A QuantStack-like mix: Q4_K / Q6_K for the FFN, Q5_K for the text keys/values, Q8_0 for the
    other block matrices, Q4_0 for the first text-embedding matrix; the rest stays float."""
    types = {}
    for name, t in sd.items():
        if t.dim() != 2:
            continue
        if ".ffn.0." in name:
            types[name] = T.Q4_K
        elif ".ffn.2." in name:
            types[name] = T.Q6_K
        elif ".cross_attn." in name and name.endswith(("k.weight", "v.weight")):
            types[name] = T.Q5_K
        elif name.startswith("blocks."):
            types[name] = T.Q8_0
        elif name.startswith("text_embedding.0"):
            types[name] = T.Q4_0
    return types


def write_dit_gguf(sd: dict, path, prefix: str = ""):
    """(path, decoded fp32 state dict) of a Wan DiT GGUF with the :func:`quant_mix` types."""
    return path, write_wan_gguf(sd, path, quant_mix(sd), prefix=prefix)


def write_real_size_wan_gguf(cfg, path, qtype=T.Q4_K, seed: int = 0) -> None:
    """A Wan DiT GGUF of ``cfg``'s real size (e.g. an A14B expert) without building its float
    weights: block matrices are random ``qtype`` blocks, the rest small float tensors, in
    QuantStack's layout (F32 modulation, 4-D patch embedding with its original shape)."""
    from wan_core import WanDiT

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in WanDiT(cfg).state_dict().items()}
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "wan")
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        if name.startswith("blocks.") and len(shape) == 2:
            w.add_tensor(name, random_blocks(qtype, shape, seed=seed * 100003 + i), raw_dtype=qtype)
            continue
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        t = rng.standard_normal(shape, dtype=np.float32) * (fan_in ** -0.5 if len(shape) > 1 else 0.1)
        if "norm" in name and name.endswith("weight"):
            t += 1.0
        if name == "patch_embedding.weight":
            w.add_tensor(name, t.reshape(shape[0], shape[1], shape[2], -1).astype(np.float16))
            w.add_array(f"comfy.gguf.orig_shape.{name}", list(shape))
        elif name.endswith("modulation"):
            w.add_tensor(name, t)
        else:
            w.add_tensor(name, t.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
