"""A tiny umt5 (d_model 4096 as the real one, 2 layers, 2 heads) and a sentencepiece model
trained here on English and Chinese text, written in the layouts users' files have."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

SENTENCES = [
    "A cat walks on the grass, realistic style.",
    "A red fox jumps over a frozen river at sunset, cinematic lighting.",
    "Two astronauts float inside a space station, slow motion, 4k.",
    "An old man plays the violin in a rainy street.",
    "一只猫在草地上散步，写实风格。",
    "夕阳下，一只红狐狸跳过结冰的河流，电影感灯光。",
    "两名宇航员在空间站内漂浮，慢动作。",
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量",
] * 4


def train_spiece(vocab_size: int = 220) -> bytes:
    """A unigram sentencepiece model with umt5's special ids (pad 0, eos 1, unk 2, no bos)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES), model_writer=buf, vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, character_coverage=1.0, model_type="unigram", hard_vocab_limit=False, minloglevel=2,
    )
    return buf.getvalue()


def tiny_umt5_state(vocab: int, seed: int = 0, d_model=4096, heads=2, d_kv=64, d_ff=256, layers=2) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {"shared.weight": torch.randn(vocab, d_model, generator=g)}
    inner = heads * d_kv
    for i in range(layers):
        p = f"encoder.block.{i}.layer."
        sd[p + "0.SelfAttention.q.weight"] = torch.randn(inner, d_model, generator=g) / d_model**0.5 / d_kv**0.25
        sd[p + "0.SelfAttention.k.weight"] = torch.randn(inner, d_model, generator=g) / d_model**0.5 / d_kv**0.25
        sd[p + "0.SelfAttention.v.weight"] = torch.randn(inner, d_model, generator=g) / d_model**0.5
        sd[p + "0.SelfAttention.o.weight"] = torch.randn(d_model, inner, generator=g) / inner**0.5
        sd[p + "0.SelfAttention.relative_attention_bias.weight"] = torch.randn(32, heads, generator=g)
        sd[p + "0.layer_norm.weight"] = 1 + 0.1 * torch.randn(d_model, generator=g)
        sd[p + "1.DenseReluDense.wi_0.weight"] = torch.randn(d_ff, d_model, generator=g) / d_model**0.5
        sd[p + "1.DenseReluDense.wi_1.weight"] = torch.randn(d_ff, d_model, generator=g) / d_model**0.5
        sd[p + "1.DenseReluDense.wo.weight"] = torch.randn(d_model, d_ff, generator=g) / d_ff**0.5
        sd[p + "1.layer_norm.weight"] = 1 + 0.1 * torch.randn(d_model, generator=g)
    sd["encoder.final_layer_norm.weight"] = 1 + 0.1 * torch.randn(d_model, generator=g)
    return sd


def spiece_tensor(proto: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(proto), dtype=torch.uint8).clone()


def write_comfy_umt5(sd: dict, proto: bytes, path: Path, fp8: torch.dtype | None = None, scaled: bool = False) -> dict:
    """ComfyUI's umt5 layout: HF names, embedded ``spiece_model``; optionally (scaled) fp8 Linears.
    Returns the fp32 weights the file decodes to."""
    out, decoded = {}, {}
    for k, v in sd.items():
        is_linear = k.endswith(".weight") and v.dim() == 2 and ".block." in k and "relative" not in k
        if fp8 is not None and is_linear:
            scale = v.abs().max() / torch.finfo(fp8).max if scaled else torch.tensor(1.0)
            q = (v / scale).to(fp8)
            out[k] = q
            if scaled:
                out[k[: -len(".weight")] + ".scale_weight"] = scale.reshape(()).float()
            decoded[k] = q.float() * scale
        else:
            out[k] = v.to(torch.float16) if fp8 is not None else v
            decoded[k] = out[k].float()
    if scaled:
        out["scaled_fp8"] = torch.empty(0, dtype=fp8)
    out["spiece_model"] = spiece_tensor(proto)
    save_file(out, str(path))
    return decoded


def write_diffusers_text_encoder(sd: dict, proto: bytes, root: Path, shards: int = 2) -> Path:
    """A diffusers pipeline's ``text_encoder/`` (sharded HF UMT5EncoderModel) and ``tokenizer/``."""
    te = root / "text_encoder"
    te.mkdir(parents=True)
    keys = sorted(sd)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k].to(torch.bfloat16) for k in keys[i::shards]}
        save_file(part, str(te / name))
        weight_map.update({k: name for k in part})
    (te / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (te / "config.json").write_text(json.dumps({"architectures": ["UMT5EncoderModel"], "model_type": "umt5"}))
    tok = root / "tokenizer"
    tok.mkdir()
    (tok / "spiece.model").write_bytes(proto)
    return root


def write_real_size_umt5(path, seed: int = 0) -> None:
    """umt5-xxl at its real size (24 layers, d_model 4096, d_ff 10240, 256,384 tokens) with random
    weights, in the layout of ``umt5_xxl_fp8_e4m3fn_scaled.safetensors`` (~6.7 GB): for benchmarks
    whose cost and memory must be the real encoder's.  The tokenizer is the small one trained here."""
    g = torch.Generator().manual_seed(seed)
    fp8 = torch.float8_e4m3fn
    sd = {"shared.weight": (torch.randn(256384, 4096, generator=g) * 0.02).half(),
          "spiece_model": spiece_tensor(train_spiece()), "scaled_fp8": torch.empty(0, dtype=fp8)}
    shapes = {"0.SelfAttention.q": (4096, 4096), "0.SelfAttention.k": (4096, 4096), "0.SelfAttention.v": (4096, 4096),
              "0.SelfAttention.o": (4096, 4096), "1.DenseReluDense.wi_0": (10240, 4096),
              "1.DenseReluDense.wi_1": (10240, 4096), "1.DenseReluDense.wo": (4096, 10240)}
    for i in range(24):
        p = f"encoder.block.{i}.layer."
        for name, shape in shapes.items():
            sd[f"{p}{name}.weight"] = torch.randn(shape, generator=g).to(fp8)
            sd[f"{p}{name}.scale_weight"] = torch.tensor(0.01)
        sd[f"{p}0.SelfAttention.relative_attention_bias.weight"] = torch.randn(32, 64, generator=g)
        sd[f"{p}0.layer_norm.weight"] = torch.ones(4096).half()
        sd[f"{p}1.layer_norm.weight"] = torch.ones(4096).half()
    sd["encoder.final_layer_norm.weight"] = torch.ones(4096).half()
    save_file(sd, str(path))
