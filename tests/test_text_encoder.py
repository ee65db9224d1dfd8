"""umt5 text encoder: parity with transformers and ComfyUI, every file layout, tokenizers, errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import rel_err
from references import comfy
from tiny_models.umt5 import (SENTENCES, spiece_tensor, tiny_umt5_state, train_spiece, write_comfy_umt5,
                       write_diffusers_text_encoder)
from wan_core.safetensors_io import CheckpointError
from wan_core.text.loader import load_text_encoder
from wan_core.text.tokenizer import PromptTokenizer, clean_prompt

PROMPTS = [
    "A red fox jumps over a frozen river at sunset, cinematic lighting.",
    "夕阳下，一只红狐狸跳过结冰的河流，电影感灯光。",
    "",
]


@pytest.fixture(scope="module")
def spiece():
    return train_spiece()


@pytest.fixture(scope="module")
def umt5(spiece, tmp_path_factory):
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    sd = tiny_umt5_state(vocab, seed=1)
    path = tmp_path_factory.mktemp("te") / "umt5_tiny_fp32.safetensors"
    write_comfy_umt5(sd, spiece, path)
    return sd, path


def _transformers_ref(sd, ids_list):
    from transformers import UMT5Config, UMT5EncoderModel

    vocab, d = sd["shared.weight"].shape
    m = UMT5EncoderModel(UMT5Config(vocab_size=vocab, d_model=d, d_kv=64, num_heads=2, num_layers=2, d_ff=256,
                                    feed_forward_proj="gated-gelu", dropout_rate=0.0, tie_word_embeddings=False))
    m.load_state_dict(dict(sd, **{"encoder.embed_tokens.weight": sd["shared.weight"]}))
    m.eval()
    ids = torch.zeros(len(ids_list), 512, dtype=torch.long)
    mask = torch.zeros(len(ids_list), 512, dtype=torch.long)
    for i, seq in enumerate(ids_list):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    with torch.no_grad():
        return m(input_ids=ids, attention_mask=mask).last_hidden_state * mask[..., None]


def _comfy_ref(sd, spiece, prompts, tmp_path):
    """ComfyUI's own path: UMT5XXlTokenizer from the embedded spiece_model + SDClipModel(T5)."""
    sd1_clip, t5, wan = comfy("comfy.sd1_clip"), comfy("comfy.text_encoders.t5"), comfy("comfy.text_encoders.wan")
    vocab, d = sd["shared.weight"].shape
    cfg = {"d_ff": 256, "d_kv": 64, "d_model": d, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
           "layer_norm_epsilon": 1e-6, "model_type": "umt5", "num_heads": 2, "num_layers": 2,
           "relative_attention_num_buckets": 32, "vocab_size": vocab}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    model = sd1_clip.SDClipModel(device="cpu", textmodel_json_config=str(tmp_path / "cfg.json"), dtype=torch.float32,
                                 special_tokens={"end": 1, "pad": 0}, model_class=t5.T5, enable_attention_masks=True,
                                 zero_out_masked=True, layer="last")
    model.load_sd(dict(sd))
    tok = wan.UMT5XXlTokenizer(tokenizer_data={"spiece_model": spiece_tensor(spiece)})
    outs = []
    for p in prompts:
        tokens = tok.tokenize_with_weights(p)
        with torch.no_grad():
            outs.append(model.encode_token_weights(tokens)[0])
    return torch.cat(outs)


@torch.no_grad()
def test_matches_transformers(umt5, spiece):
    sd, path = umt5
    enc = load_text_encoder(path)
    ids = enc.tokenize(PROMPTS)
    assert ids[2] == [1]  # the empty prompt is EOS only
    ours = enc.encode_ids(ids)
    assert ours.shape == (3, 512, 4096)
    ref = _transformers_ref(sd, ids)
    assert rel_err(ours, ref) < 1e-4
    for row, seq in enumerate(ids):  # zero past the last valid token, non-zero up to it
        assert ours[row, len(seq):].abs().max() == 0
        assert ours[row, len(seq) - 1].abs().max() > 0


@torch.no_grad()
def test_matches_comfyui_end_to_end(umt5, spiece, tmp_path):
    """Same prompts (English, Chinese, empty) through ComfyUI's tokenizer+encoder and ours."""
    sd, path = umt5
    ours = load_text_encoder(path).encode(PROMPTS)
    ref = _comfy_ref(sd, spiece, PROMPTS, tmp_path)
    assert ref.shape == ours.shape
    assert rel_err(ours, ref) < 1e-4


def test_tokenizer_cleaning_and_chinese(spiece):
    tok = PromptTokenizer.from_sentencepiece(spiece)
    assert clean_prompt("  A&amp;amp;B \n\t cat  ") == "A&B cat"
    zh = tok("一只猫在草地上散步")
    assert zh[-1] == 1 and all(i != 2 for i in zh[:-1])  # no unknown pieces for Chinese seen in training


def test_long_prompt_truncated_with_warning(spiece, caplog):
    tok = PromptTokenizer.from_sentencepiece(spiece)
    ids = tok(" ".join(SENTENCES * 8))
    assert len(ids) == 512 and ids[-1] == 1
    assert "truncated to its first 511 tokens" in caplog.text


@pytest.mark.parametrize("fp8,scaled", [(torch.float8_e4m3fn, False), (torch.float8_e4m3fn, True),
                                        (torch.float8_e5m2, True)])
@torch.no_grad()
def test_fp8_files_stay_fp8(umt5, spiece, tmp_path, fp8, scaled):
    sd, _ = umt5
    path = tmp_path / "umt5_fp8.safetensors"
    decoded = write_comfy_umt5(sd, spiece, path, fp8=fp8, scaled=scaled)
    enc = load_text_encoder(path)
    q = enc.model.encoder.block[0].layer[0].SelfAttention.q
    assert q.weight.dtype == fp8
    assert (getattr(q, "scale_weight", None) is not None) == scaled
    ids = enc.tokenize(PROMPTS)
    assert rel_err(enc.encode_ids(ids), _transformers_ref(decoded, ids)) < 1e-4


@torch.no_grad()
def test_diffusers_folder_with_tokenizer(umt5, spiece, tmp_path):
    sd, _ = umt5
    root = write_diffusers_text_encoder(sd, spiece, tmp_path / "Wan2.1-T2V-1.3B-Diffusers")
    enc = load_text_encoder(root)
    ids = enc.tokenize(PROMPTS)
    ref = _transformers_ref({k: v.to(torch.bfloat16).float() for k, v in sd.items()}, ids)
    assert rel_err(enc.encode_ids(ids), ref) < 1e-4
    enc2 = load_text_encoder(root / "text_encoder")  # the text_encoder folder itself finds ../tokenizer
    assert enc2.tokenize(PROMPTS) == ids


def test_tokenizer_json(tmp_path, spiece):
    """A tokenizer.json (HF fast tokenizer) is read with the tokenizers library, no network."""
    from transformers import T5TokenizerFast

    (tmp_path / "spiece.model").write_bytes(spiece)
    fast = T5TokenizerFast.from_pretrained(str(tmp_path), extra_ids=0, legacy=False)  # local folder only
    out = tmp_path / "tok"
    out.mkdir()
    fast.backend_tokenizer.save(str(out / "tokenizer.json"))
    tok = PromptTokenizer.from_folder(out)
    sp = PromptTokenizer.from_sentencepiece(spiece)
    for p in PROMPTS:
        assert tok(p) == sp(p)


def test_errors(tmp_path, umt5):
    sd, _ = umt5
    save_file({k: v for k, v in sd.items()}, str(tmp_path / "no_tok.safetensors"))
    with pytest.raises(CheckpointError, match="no_tok.safetensors carries no tokenizer"):
        load_text_encoder(tmp_path / "no_tok.safetensors")
    save_file({"decoder.middle.0.residual.0.gamma": torch.ones(1)}, str(tmp_path / "wan_2.1_vae.safetensors"))
    with pytest.raises(CheckpointError, match="wan_2.1_vae.safetensors is not a umt5 text encoder.*VAE"):
        load_text_encoder(tmp_path / "wan_2.1_vae.safetensors")
    (tmp_path / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickle"):
        load_text_encoder(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")


def test_truncated_text_encoder_file(tmp_path, umt5):
    _, path = umt5
    data = path.read_bytes()
    (tmp_path / "umt5_xxl_fp16.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="umt5_xxl_fp16.safetensors .*truncated or corrupt.*umt5"):
        load_text_encoder(tmp_path / "umt5_xxl_fp16.safetensors")


@torch.no_grad()
def test_cast_workspace_reuses_buffers_without_changing_results():
    """Per-call fp8 weights decoded into one reused buffer per shape give the same outputs, layer
    after layer, and the buffers are gone after the block."""
    import wan_core.ops as ops

    g = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(3):
        lin = ops.cast_ops.Linear(16, 32, bias=False)
        lin.weight = torch.nn.Parameter((torch.randn(32, 16, generator=g)).to(torch.float8_e4m3fn), requires_grad=False)
        lin.register_buffer("scale_weight", torch.tensor(0.05))
        layers.append(lin)
    x = torch.randn(4, 16, generator=g)
    plain = [lin(x) for lin in layers]
    with ops.cast_workspace():
        reused = [lin(x) for lin in layers]
        assert len(ops._WORKSPACE) == 1  # one buffer for the three same-shaped weights
    assert ops._WORKSPACE is None
    for a, b in zip(plain, reused):
        assert torch.equal(a, b)
    assert not torch.equal(reused[0], reused[1])


def test_long_prompt_uses_far_position_buckets_and_matches_references(umt5, spiece, tmp_path):
    """A prompt of a few hundred tokens (distances past umt5's 128-token bucket horizon) against
    transformers and ComfyUI: the short prompts above never reach the far relative-position buckets."""
    sd, path = umt5
    enc = load_text_encoder(path)
    long = " ".join(SENTENCES[:8])  # 257 tokens with the test vocabulary
    ids = enc.tokenize([long, PROMPTS[0]])
    assert 200 < len(ids[0]) <= 512
    ours = enc.encode_ids(ids)
    assert rel_err(ours, _transformers_ref(sd, ids)) < 1e-4
    assert rel_err(load_text_encoder(path).encode([long]), _comfy_ref(sd, spiece, [long], tmp_path)) < 1e-4
