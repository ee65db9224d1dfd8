"""Every DiT file layout and weight dtype loads and matches the fp32 original; bad files get clear errors."""


import pytest
import torch
from safetensors.torch import save_file

from conftest import rel_err
from tiny_models.dit import TINY_T2V, TINY_TI2V, fp8_state, quantizable, random_dit_state, write_diffusers_folder
from wan_core import CheckpointError, ModelLayoutError, WanDiT, load_dit

LATENT = (3, 6, 10)


def _run(model, cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_channels, *LATENT, generator=g)
    ctx = torch.randn(2, 24, 4096, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([800.0, 250.0]), ctx)


def _fp32_model(cfg, sd):
    m = WanDiT(cfg)
    m.load_state_dict(sd)
    return m.eval()


@pytest.fixture(scope="module")
def original():
    sd = random_dit_state(TINY_T2V, seed=11)
    return sd, _run(_fp32_model(TINY_T2V, sd), TINY_T2V)


def _check_equals_original(model, original, tol):
    sd, expected = original
    assert model.config == TINY_T2V
    err = rel_err(_run(model, TINY_T2V), expected)
    assert err < tol, err
    return err


def test_official_names_fp32(tmp_path, original):
    save_file(original[0], str(tmp_path / "wan.safetensors"))
    _check_equals_original(load_dit(tmp_path / "wan.safetensors"), original, 1e-6)


def test_comfyui_prefixed_names(tmp_path, original):
    sd = {"model.diffusion_model." + k: v for k, v in original[0].items()}
    save_file(sd, str(tmp_path / "wan2.1_t2v_1.3B_fp32.safetensors"))
    _check_equals_original(load_dit(tmp_path / "wan2.1_t2v_1.3B_fp32.safetensors"), original, 1e-6)


@pytest.mark.parametrize("shards", [1, 3])
def test_diffusers_folder(tmp_path, original, shards):
    folder = write_diffusers_folder(original[0], TINY_T2V, tmp_path / "Wan-Diffusers" / "transformer", shards)
    # both the transformer folder itself and the pipeline folder above it are accepted
    _check_equals_original(load_dit(folder), original, 1e-6)
    _check_equals_original(load_dit(folder.parent), original, 1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_half_precision_files(tmp_path, original, dtype, tol):
    sd = {k: v.to(dtype) for k, v in original[0].items()}
    save_file(sd, str(tmp_path / "half.safetensors"))
    model = load_dit(tmp_path / "half.safetensors")
    assert model.blocks[0].ffn[0].weight.dtype == dtype  # kept as stored, cast per layer
    # exact against the fp32 model holding the same rounded weights, close to the original
    rounded = _run(_fp32_model(TINY_T2V, {k: v.float() for k, v in sd.items()}), TINY_T2V)
    assert rel_err(_run(model, TINY_T2V), rounded) < 1e-5
    _check_equals_original(model, original, tol)


@pytest.mark.parametrize("fp8", ["float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "comfy_scaled"])
def test_fp8_files_stay_fp8(tmp_path, original, fp8, scaled):
    dtype = getattr(torch, fp8)
    file_sd, decoded = fp8_state(original[0], dtype, scaled)
    save_file(file_sd, str(tmp_path / "fp8.safetensors"))
    model = load_dit(tmp_path / "fp8.safetensors")
    for name, p in model.named_parameters():
        if quantizable(name, p):
            assert p.dtype == dtype, name
    if scaled:
        assert model.blocks[1].self_attn.q.scale_weight.dtype == torch.float32
    expected = _run(_fp32_model(TINY_T2V, decoded), TINY_T2V)
    assert rel_err(_run(model, TINY_T2V), expected) < 1e-5
    _check_equals_original(model, original, 0.25 if fp8 == "float8_e5m2" else 0.12)


def test_weight_dtype_conversion_on_load(tmp_path, original):
    """Exact against the fp32 model holding the weights rounded the way the loader keeps them (a
    0.12 tolerance against the unrounded original let a zeroed bias or a reset norm pass)."""
    from wan_core.dit.safetensors_loader import storage_dtype

    save_file(original[0], str(tmp_path / "wan.safetensors"))
    model = load_dit(tmp_path / "wan.safetensors", weight_dtype=torch.float8_e4m3fn)
    assert model.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    assert model.blocks[0].modulation.dtype == torch.float32
    rounded = {k: v.to(storage_dtype(k, v.dtype, torch.float8_e4m3fn)).float() for k, v in original[0].items()}
    assert any(not torch.equal(rounded[k], original[0][k]) for k in rounded)
    expected = _run(_fp32_model(TINY_T2V, rounded), TINY_T2V)
    assert rel_err(_run(model, TINY_T2V), expected) < 1e-5
    _check_equals_original(model, original, 0.12)


def test_ti2v_detected_from_shapes(tmp_path):
    sd = random_dit_state(TINY_TI2V, seed=2)
    save_file(sd, str(tmp_path / "wan2.1_t2v_1.3B_bf16.safetensors"))  # a misleading name is ignored
    model = load_dit(tmp_path / "wan2.1_t2v_1.3B_bf16.safetensors")
    assert model.config == TINY_TI2V and model.config.per_token_timesteps


# -- bad input ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*nope.safetensors"):
        load_dit(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("name", ["diffusion_pytorch_model.bin", "Wan2.1_T2V_1.3B.pth", "model.ckpt", "x.pt"])
def test_pickle_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match=r"pickle.*\.safetensors or \.gguf"):
        load_dit(tmp_path / name)


def test_truncated_file(tmp_path, original):
    save_file(original[0], str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated or corrupt"):
        load_dit(tmp_path / "cut.safetensors")


def test_garbage_file(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_dit(tmp_path / "junk.safetensors")


def test_vae_in_dit_slot(tmp_path):
    vae = {"decoder.middle.0.residual.0.gamma": torch.ones(384, 1, 1, 1), "conv1.weight": torch.zeros(32, 32, 1, 1, 1),
           "encoder.conv1.weight": torch.zeros(96, 3, 3, 3, 3)}
    save_file(vae, str(tmp_path / "wan_2.1_vae.safetensors"))
    with pytest.raises(ModelLayoutError, match=r"wan_2.1_vae.safetensors is not a Wan DiT.*Wan VAE.*models/vae"):
        load_dit(tmp_path / "wan_2.1_vae.safetensors")


def test_text_encoder_in_dit_slot(tmp_path):
    te = {"shared.weight": torch.zeros(10, 8), "encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(8, 8)}
    save_file(te, str(tmp_path / "umt5.safetensors"))
    with pytest.raises(ModelLayoutError, match="umt5.safetensors is not a Wan DiT.*text encoder"):
        load_dit(tmp_path / "umt5.safetensors")


def test_missing_tensors_named(tmp_path, original):
    sd = {k: v for k, v in original[0].items() if k != "blocks.1.ffn.2.bias"}
    save_file(sd, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ModelLayoutError, match=r"partial.safetensors lacks 1 tensors.*blocks.1.ffn.2.bias"):
        load_dit(tmp_path / "partial.safetensors")


def test_i2v_model_refused(tmp_path, original):
    sd = dict(original[0], **{"img_emb.proj.0.weight": torch.zeros(4)})
    save_file(sd, str(tmp_path / "i2v.safetensors"))
    with pytest.raises(ModelLayoutError, match="image-to-video"):
        load_dit(tmp_path / "i2v.safetensors")


def test_folder_without_weights(tmp_path):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="no .safetensors weights.*pickle"):
        load_dit(tmp_path)


def test_sharded_folder_with_missing_shard(tmp_path, original):
    folder = write_diffusers_folder(original[0], TINY_T2V, tmp_path / "transformer", shards=2)
    next(folder.glob("*00002-of-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="missing: diffusion_pytorch_model-00002-of-00002"):
        load_dit(folder)


def test_flattened_patch_embedding_refused(tmp_path, original):
    sd = dict(original[0])
    sd["patch_embedding.weight"] = sd["patch_embedding.weight"].flatten(1)
    save_file(sd, str(tmp_path / "flat.safetensors"))
    with pytest.raises(ModelLayoutError, match="patch_embedding.weight has shape"):
        load_dit(tmp_path / "flat.safetensors")
