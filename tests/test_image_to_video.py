"""Image-to-video with the Wan2.2 I2V-A14B experts (36 input channels: the noisy latent, a 4-channel
frame mask and the 16-channel image latent; no CLIP branch), on our MODEL as on native:

- the DiT against the official ``WanModel(model_type="i2v")`` with its image condition ``y``;
- core's ``WanImageToVideo`` (start image -> ``concat_latent_image`` / ``concat_mask``) then core
  KSampler, ours against ``UNETLoader``'s model on the same file (safetensors and GGUF);
- Wan Sampler on that conditioning against core KSampler; an I2V DiT given no image is refused.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import comfy_inprocess as ci
from conftest import rel_err
from references import official_wan
from tiny_models.dit import random_dit_state
from tiny_models.gguf_files import write_dit_gguf
from wan_core.dit.config import WanDiTConfig

TOL = 1e-5
TINY_I2V = WanDiTConfig(in_channels=36, out_channels=16, dim=256, ffn_dim=512, num_heads=2, num_layers=2)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ci.host()
    from tiny_models.vae import random_vae_state
    from wan_core.vae import WanVAEConfig

    base = tmp_path_factory.mktemp("i2v")
    state = random_dit_state(TINY_I2V, seed=61)
    save_file({f"model.diffusion_model.{k}": v for k, v in state.items()}, str(base / "i2v.safetensors"))
    gguf, decoded = write_dit_gguf(state, base / "i2v.gguf")
    save_file({f"model.diffusion_model.{k}": v for k, v in decoded.items()}, str(base / "i2v_gguf_decoded.safetensors"))
    save_file(random_vae_state(WanVAEConfig("2.1", z_dim=16, dim=96, dec_dim=96), seed=62), str(base / "vae.safetensors"))
    return {"state": state, "base": base, "gguf": gguf}


def core_vae(env):
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(env["base"] / "vae.safetensors")))


def image_conditioning(env, with_image=True, seed=0):
    """(positive, negative, latent) from core WanImageToVideo: a 64x48 start image, 9 frames."""
    g = torch.Generator().manual_seed(seed)
    pos = [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]]
    neg = [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]]
    image = torch.rand(1, 48, 64, 3, generator=g) if with_image else None
    return ci.run_node("WanImageToVideo", positive=pos, negative=neg, vae=core_vae(env), width=64, height=48,
                       length=9, batch_size=1, start_image=image)


@torch.no_grad()
def test_i2v_dit_matches_the_official_model(env):
    """Our DiT on [noisy latent, mask + image latent] == the official I2V model given ``y``."""
    from wan_core import WanDiT

    mod = official_wan("modules.model")
    ref = mod.WanModel(model_type="i2v", patch_size=(1, 2, 2), text_len=512, in_dim=36, dim=256, ffn_dim=512,
                       freq_dim=256, text_dim=4096, out_dim=16, num_heads=2, num_layers=2, cross_attn_norm=True)
    ref.load_state_dict(env["state"])
    ref.eval()
    ours = WanDiT(TINY_I2V)
    ours.load_state_dict(env["state"])
    ours.eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 16, 3, 6, 10, generator=g), torch.randn(2, 20, 3, 6, 10, generator=g)
    t, ctx = torch.tensor([937.0, 311.0]), torch.randn(2, 30, 4096, generator=g)
    seq_len = 3 * 3 * 5
    official = torch.stack(ref(list(x), t[:, None].expand(2, seq_len), list(ctx), seq_len, y=list(y)))
    assert rel_err(ours.predict(torch.cat([x, y], dim=1), t, ctx), official) < TOL


@pytest.mark.parametrize("kind", ["safetensors", "gguf"])
def test_wan_image_to_video_then_ksampler_equals_native(env, kind):
    """Core WanImageToVideo's conditioning reaches our DiT as it reaches native's: the same video
    from core KSampler on ``Wan Load DiT``'s MODEL and on ``UNETLoader``'s, from the same file (the
    GGUF against native on its decoded weights); the start image changes the video."""
    import comfy.sd
    import nodes as core

    loaders = ci.pack_module("nodes.loaders")
    ours = loaders.load_wan_model(str(env["base"] / ("i2v.safetensors" if kind == "safetensors" else "i2v.gguf")))
    native = comfy.sd.load_diffusion_model(str(env["base"] / ("i2v.safetensors" if kind == "safetensors"
                                                               else "i2v_gguf_decoded.safetensors")))
    pos, neg, latent = image_conditioning(env)
    assert "concat_latent_image" in pos[0][1] and "concat_mask" in pos[0][1]

    def sample(model, pos, neg):
        return core.common_ksampler(model, 7, 3, 4.0, "euler", "simple", pos, neg, latent)[0]["samples"]

    got = sample(ours, pos, neg)
    # over 3 steps (a forward compares at 1e-5); GGUF measured 1.05e-5: per-call decoding and the
    # decoded file give the same weights, the last bits differ in the order of the sums
    assert rel_err(got, sample(native, pos, neg)) < (TOL if kind == "safetensors" else 3e-5)
    blank_pos, blank_neg, _ = image_conditioning(env, seed=1)  # another start image
    assert rel_err(sample(ours, blank_pos, blank_neg), got) > 1e-3


def test_wan_sampler_runs_image_to_video_and_refuses_it_without_an_image(env):
    """Wan Sampler on WanImageToVideo's conditioning == core KSampler (euler, the same shift) on the
    native model; the same DiT with conditioning that carries no start image is refused before
    sampling, naming the DiT file and the input."""
    import comfy.sd
    import nodes as core

    loaders = ci.pack_module("nodes.loaders")
    sampler = ci.pack_module("nodes.sampler_nodes").WanCoreSampler()
    ours = loaders.load_wan_model(str(env["base"] / "i2v.safetensors"))
    native = comfy.sd.load_diffusion_model(str(env["base"] / "i2v.safetensors"))
    pos, neg, latent = image_conditioning(env)
    args = dict(seed=7, steps=4, guidance=4.0, shift=5.0, scheduler="euler", denoise=1.0)
    with torch.inference_mode():
        got = sampler.run(ours, pos, neg, latent, **args)[0]["samples"]
    shifted = ci.run_node("ModelSamplingSD3", model=native, shift=5.0)[0]
    ref = core.common_ksampler(shifted, 7, 4, 4.0, "euler", "simple", pos, neg, latent)[0]["samples"]
    assert rel_err(got, ref) < TOL
    g = torch.Generator().manual_seed(9)
    bare = [[torch.randn(1, 512, 4096, generator=g), {}]]
    with pytest.raises(ValueError, match=r"i2v\.safetensors is an image-to-video model .*WanImageToVideo"):
        with torch.inference_mode():
            sampler.run(ours, bare, bare, latent, **args)
