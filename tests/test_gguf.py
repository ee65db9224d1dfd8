"""GGUF: every dequant kernel vs gguf.quants, the Wan DiT and both A14B experts, umt5, bad files."""

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import gguf
from conftest import rel_err
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from tiny_models.gguf_files import QUANTIZABLE, quant_mix, random_blocks, write_umt5_gguf, write_wan_gguf
from tiny_models.dit import TINY_T2V, random_dit_state
from wan_core import CheckpointError, ModelLayoutError, load_dit
from wan_core.gguf.dequant import dequantize

ALL_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS]


def _shapes(qtype):
    block = GGML_QUANT_SIZES[qtype][0]
    return [(3, 96), (2, 5, 160)] if block == 32 else [(3, 256), (2, 512)]  # not multiples of 256 where allowed


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_dequant_equals_gguf(qtype):
    for shape in _shapes(qtype):
        sources = [("random", random_blocks(qtype, shape, seed=1))]
        if qtype in QUANTIZABLE:
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            sources.append(("quantized", gguf.quants.quantize(x.reshape(-1, shape[-1]), qtype)))
        for kind, raw in sources:
            ref = gguf.quants.dequantize(raw, qtype).reshape(shape)
            ref_t = torch.from_numpy(ref.copy())
            raw_t = torch.from_numpy(raw.copy())
            ours = dequantize(raw_t, qtype, shape, torch.float32)
            assert torch.equal(ours, ref_t), f"{qtype.name} {kind} {shape}"
            for dt in (torch.float16, torch.bfloat16):  # one rounding of the exact fp32 value
                assert torch.equal(dequantize(raw_t, qtype, shape, dt), ref_t.to(dt)), f"{qtype.name} {dt}"


def test_unkerneled_type_falls_back_with_warning(caplog):
    shape = (2, 256)
    raw = random_blocks(T.TQ2_0, shape, seed=3)
    with caplog.at_level(logging.WARNING):
        out = dequantize(torch.from_numpy(raw), T.TQ2_0, shape, name="blocks.3.ffn.0.weight")
    assert torch.equal(out, torch.from_numpy(gguf.quants.dequantize(raw, T.TQ2_0).reshape(shape).copy()))
    assert "blocks.3.ffn.0.weight" in caplog.text and "TQ2_0" in caplog.text


# A mix like QuantStack's Q4_K_M files: K-quants for the big matrices, Q8_0 elsewhere.
def _run(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, 6, 10, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([900.0, 300.0]), torch.randn(2, 24, 4096, generator=g))


@pytest.mark.parametrize("prefix,metadata", [("", True), ("model.diffusion_model.", False)])
def test_wan_gguf_matches_dequantized_safetensors(tmp_path, prefix, metadata):
    sd = random_dit_state(TINY_T2V, seed=4)
    path = tmp_path / "Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf"
    decoded = write_wan_gguf(sd, path, quant_mix(sd), prefix=prefix, orig_shape_metadata=metadata)
    model = load_dit(path)
    assert model.config == TINY_T2V
    q = model.blocks[0].ffn[0]
    assert q.weight.dtype == torch.uint8 and q.qtype == T.Q4_K  # still quantized in memory
    assert model.blocks[0].modulation.dtype == torch.float32
    save_file(decoded, str(tmp_path / "dequantized.safetensors"))
    reference = load_dit(tmp_path / "dequantized.safetensors")
    assert rel_err(_run(model), _run(reference)) < 1e-5
    # and compact: the quantized layers hold less than a third of their fp32 bytes
    quant_bytes = sum(p.numel() for p in model.parameters() if p.dtype == torch.uint8)
    assert quant_bytes < sum(decoded[n].numel() * 4 for n in quant_mix(sd)) / 3


def test_two_a14b_experts_load_as_two_models(tmp_path):
    high_sd, low_sd = random_dit_state(TINY_T2V, seed=5), random_dit_state(TINY_T2V, seed=6)
    hp, lp = tmp_path / "Wan2.2-T2V-A14B-HighNoise-Q8_0.gguf", tmp_path / "Wan2.2-T2V-A14B-LowNoise-Q8_0.gguf"
    types = {k: T.Q8_0 for k, v in high_sd.items() if v.dim() == 2 and k.startswith("blocks.")}
    dh, dl = write_wan_gguf(high_sd, hp, types), write_wan_gguf(low_sd, lp, types)
    high, low = load_dit(hp), load_dit(lp)
    assert high is not low and high.blocks[0].ffn[0].weight.data_ptr() != low.blocks[0].ffn[0].weight.data_ptr()
    for model, decoded in ((high, dh), (low, dl)):
        ref = load_dit_from(decoded, tmp_path)
        assert rel_err(_run(model), _run(ref)) < 1e-5
    assert rel_err(_run(high), _run(low)) > 1e-2


def load_dit_from(sd, tmp_path):
    p = tmp_path / f"ref{len(list(tmp_path.iterdir()))}.safetensors"
    save_file(sd, str(p))
    return load_dit(p)


# -- umt5 ---------------------------------------------------------------------------------------


def test_umt5_gguf_encodes_like_safetensors(tmp_path):
    import sentencepiece

    from tiny_models.umt5 import tiny_umt5_state, train_spiece, write_comfy_umt5
    from wan_core.text.loader import load_text_encoder

    proto = train_spiece()
    vocab = sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size()
    sd = tiny_umt5_state(vocab, seed=2)
    decoded = write_umt5_gguf(sd, proto, tmp_path / "umt5-xxl-encoder-Q8_0.gguf")
    enc = load_text_encoder(tmp_path / "umt5-xxl-encoder-Q8_0.gguf")
    assert enc.model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.uint8
    write_comfy_umt5(decoded, proto, tmp_path / "umt5_dequantized.safetensors")
    ref = load_text_encoder(tmp_path / "umt5_dequantized.safetensors")
    prompts = ["A red fox jumps over a frozen river at sunset, cinematic lighting.", "夕阳下，一只红狐狸跳过结冰的河流。", ""]
    assert enc.tokenize(prompts) == ref.tokenize(prompts)  # tokenizer rebuilt from GGUF metadata
    assert rel_err(enc.encode(prompts), ref.encode(prompts)) < 1e-5


# -- bad files ------------------------------------------------------------------------------------


def test_wrong_magic(tmp_path):
    (tmp_path / "fake.gguf").write_bytes(b"GGML" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="fake.gguf is not a readable GGUF"):
        load_dit(tmp_path / "fake.gguf")


def test_truncated_gguf(tmp_path):
    sd = random_dit_state(TINY_T2V, seed=4)
    write_wan_gguf(sd, tmp_path / "full.gguf", {})
    data = (tmp_path / "full.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.gguf"):
        load_dit(tmp_path / "cut.gguf")


def test_not_wan_architecture(tmp_path):
    sd = random_dit_state(TINY_T2V, seed=4)
    write_wan_gguf(sd, tmp_path / "llama.gguf", {}, arch="llama")
    with pytest.raises(ModelLayoutError, match="llama.gguf is a GGUF of architecture 'llama', not a Wan DiT"):
        load_dit(tmp_path / "llama.gguf")


def test_unsupported_tensor_type(tmp_path):
    """Q8_K (an intermediate llama.cpp type) has no kernel here nor in gguf: refused at load."""
    sd = random_dit_state(TINY_T2V, seed=4)
    write_wan_gguf(sd, tmp_path / "odd.gguf", {"blocks.0.ffn.0.weight": T.Q8_K})
    with pytest.raises(CheckpointError, match="odd.gguf: tensor blocks.0.ffn.0.weight has GGML type Q8_K.*can dequantize"):
        load_dit(tmp_path / "odd.gguf")


def test_wan_gguf_with_wrong_shapes(tmp_path):
    sd = random_dit_state(TINY_T2V, seed=4)
    sd["head.modulation"] = torch.zeros(1, 3, 256)
    write_wan_gguf(sd, tmp_path / "bad.gguf", {})
    with pytest.raises(ModelLayoutError, match="bad.gguf: head.modulation has shape"):
        load_dit(tmp_path / "bad.gguf")
