"""Careless and hostile input, in-process: non-finite numbers, broken LoRA files, a latent that turns
NaN, A14B experts of different sizes, file lists with shards and broken links. Each refusal names
the input or file and says what to do (issue: no silent black videos)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

import comfy_inprocess as ci
from tiny_models.dit import TINY_T2V, random_dit_state
from tiny_models.loras import lora_state
from wan_core.dit.config import WanDiTConfig

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ci.host()
    import folder_paths

    base = tmp_path_factory.mktemp("hostile")
    sd = random_dit_state(TINY_T2V, seed=41)
    save_file(sd, str(base / "t2v.safetensors"))
    big = WanDiTConfig(dim=384, ffn_dim=512, num_heads=3, num_layers=2)
    save_file(random_dit_state(big, seed=42), str(base / "wan_bigger.safetensors"))
    broken = dict(sd)
    broken["head.head.bias"] = torch.full_like(sd["head.head.bias"], NAN)
    save_file(broken, str(base / "nan_head.safetensors"))
    loras = base / "loras"
    loras.mkdir()
    good = lora_state(TINY_T2V, "lightx2v", rank=8, seed=3)
    save_file(good, str(loras / "good.safetensors"))
    bad = dict(good)
    first = sorted(k for k in bad if k.endswith("lora_up.weight"))[0]
    bad[first] = torch.full_like(bad[first], NAN)
    save_file(bad, str(loras / "nan_values.safetensors"))
    raw = (loras / "good.safetensors").read_bytes()
    (loras / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (loras / "empty.safetensors").write_bytes(b"")
    (loras / "text.safetensors").write_text("this is not a safetensors file\n")
    folder_paths.add_model_folder_path("loras", str(loras))
    return base


def load(env, name):
    with torch.inference_mode():
        return ci.pack_module("nodes.loaders").load_wan_model(str(env / name))


def conds():
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]], [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]]


def sample(model, **kw):
    args = dict(seed=1, steps=2, guidance=5.0, shift=5.0, scheduler="unipc", denoise=1.0)
    args.update(kw)
    pos, neg = conds()
    with torch.inference_mode():
        return ci.pack_module("nodes.sampler_nodes").WanCoreSampler().run(
            model, pos, neg, {"samples": torch.zeros(1, 16, 2, 4, 6)}, **args)[0]["samples"]


@pytest.mark.parametrize("name,value", [("guidance", NAN), ("shift", NAN), ("denoise", NAN), ("boundary", NAN),
                                        ("guidance_low_noise", INF), ("shift", -INF)])
def test_wan_sampler_refuses_non_finite_numbers_naming_them(env, name, value):
    """Today's main: an all-black video for NaN guidance / shift, an undefined expert switch for NaN
    boundary, "cannot convert float NaN to integer" for NaN denoise."""
    with pytest.raises(ValueError, match=rf"^{name} is {value}: it must be a finite number"):
        sample(load(env, "t2v.safetensors"), **{name: value})


def test_other_nodes_refuse_non_finite_numbers(env):
    nodes = ci.pack_module("nodes.sampler_nodes")
    lora = ci.pack_module("nodes.lora")
    model = load(env, "t2v.safetensors")
    pos, neg = conds()
    with pytest.raises(ValueError, match=r"^shift is nan"):
        nodes.WanCoreSigmas().get("unipc", 4, NAN, 1.0)
    with pytest.raises(ValueError, match=r"^boundary is nan"):
        nodes.WanCoreExpertGuider().get(model, model, pos, neg, 4.0, 3.0, NAN)
    with pytest.raises(ValueError, match=r"^strength is nan"):
        lora.WanCoreLoraLoader().load(model, "good.safetensors", NAN)
    with pytest.raises(ValueError, match=r"^steps is 8: dmd runs 3 steps"):
        sample(model, scheduler="dmd", steps=8, guidance=1.0)
    with pytest.raises(ValueError, match=r"^guidance is 5.0: dmd .* set guidance to 1.0"):
        sample(model, scheduler="dmd", steps=3, guidance=5.0)
    with pytest.raises(ValueError, match=r"^tile_overlap \(512\) must be smaller than tile_size \(512\)"):
        ci.pack_module("nodes.video").WanCoreDecode().decode(None, {"samples": torch.zeros(1, 16, 2, 4, 6)},
                                                             True, 512, 512)
    with pytest.raises(ValueError, match=r"^weight_dtype is fp16: x\.gguf is GGUF"):
        ci.pack_module("nodes.loaders").WanCoreLoadDiT().load("x.gguf", "fp16", "auto")


def test_a_latent_that_turns_nan_stops_the_run_naming_the_step(env):
    """A model whose output is NaN (here a NaN head bias; in the wild a broken LoRA through core's
    loaders, or an fp16 overflow) stops at the first step with the likely causes, instead of
    decoding a black video."""
    with pytest.raises(ValueError, match=r"NaN or infinite at step 1 of 2.*LoRA.*fp16"):
        sample(load(env, "nan_head.safetensors"))
    assert torch.isfinite(sample(load(env, "t2v.safetensors"))).all()  # a healthy model runs


@pytest.mark.parametrize("name,match", [
    ("nan_values.safetensors", r"nan_values\.safetensors: 1 of its tensors hold NaN"),
    ("truncated.safetensors", r"truncated\.safetensors.*(truncated|corrupt)"),
    ("empty.safetensors", r"empty\.safetensors"),
    ("text.safetensors", r"text\.safetensors"),
])
def test_wan_lora_loader_refuses_broken_files_naming_them(env, name, match):
    model = load(env, "t2v.safetensors")
    with pytest.raises(Exception, match=match):
        ci.pack_module("nodes.lora").WanCoreLoraLoader().load(model, name, 1.0)
    (patched,) = ci.pack_module("nodes.lora").WanCoreLoraLoader().load(model, "good.safetensors", 1.0)
    assert patched is not model


def test_a14b_experts_of_different_sizes_are_refused_naming_both(env):
    """Today's main compared only the channel count: a 1.3B as the low-noise expert ran."""
    high, low = load(env, "t2v.safetensors"), load(env, "wan_bigger.safetensors")
    with pytest.raises(ValueError, match=r"t2v\.safetensors.*wan_bigger\.safetensors") as refused:
        sample(high, model_low_noise=low)
    dims = [f"dim {m.model.diffusion_model.config.dim}" for m in (high, low)]
    assert all(str(refused.value).count(d) == 1 for d in dims), str(refused.value)  # each size said once
    pos, neg = conds()
    with pytest.raises(ValueError, match=r"different models"):
        ci.pack_module("nodes.sampler_nodes").WanCoreExpertGuider().get(high, low, pos, neg, 4.0, 3.0, 0.875)


def test_loader_lists_no_diffusers_shards_and_no_broken_links(env, tmp_path):
    import folder_paths

    host = ci.pack_module("nodes.host")
    folder = tmp_path / "dm"
    folder.mkdir()
    for name in ("wan_real.safetensors", "diffusion_pytorch_model-00001-of-00002.safetensors",
                 "diffusion_pytorch_model-00002-of-00002.safetensors"):
        (folder / name).write_bytes(b"x")
    os.symlink(folder / "gone.safetensors", folder / "dangling.safetensors")
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    host.register_model_folders()
    if hasattr(folder_paths, "filename_list_cache"):  # listed afresh, with the new folder
        folder_paths.filename_list_cache.clear()
    names = host.model_choices(host.DIT_KEY, "transformer")
    assert "wan_real.safetensors" in names
    assert not [n for n in names if "-of-0000" in n or n == "dangling.safetensors"], names


GiB = 2**30


def memory(monkeypatch, ram_gib, device_gib=None):
    """Pin what the host answers for the machine's memory (the tests must not depend on the size of
    the machine they run on): RAM, and a GPU's memory for a CUDA load device."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_total_memory", lambda dev=None, *a, **k: int(
        (device_gib if dev is not None and torch.device(dev).type == "cuda" else ram_gib) * GiB))


def wan21_vae(device="cpu"):
    from tiny_models.vae import random_vae_state
    from wan_core.vae import WanVAE, WanVAEConfig

    host = ci.pack_module("nodes.host")
    cfg = WanVAEConfig("2.1", z_dim=16, dim=96, dec_dim=96)
    model = WanVAE(cfg)
    model.load_state_dict(random_vae_state(cfg, seed=0))
    return host.manage(model.eval(), "vae", "wan_2.1_vae.safetensors", torch.device(device), torch.device("cpu"))


@pytest.mark.parametrize("width,height,frames,batch", [(4096, 4096, 1025, 1), (4096, 4096, 1025, 64),
                                                       (832, 480, 81, 64)])
def test_video_size_refuses_what_cannot_fit_before_allocating(env, width, height, frames, batch, monkeypatch):
    """Each value inside the node's limits, together too large for a 24 GiB machine (pinned: with
    64 GiB the last case fits): an earlier main accepted them and the server's memory grew past 12 GB
    (or failed on a raw 275 GB allocation at batch 64). Refused at the start of the node with the
    estimate and what fits; a normal size is accepted."""
    video = ci.pack_module("nodes.video")
    vae = wan21_vae()
    memory(monkeypatch, ram_gib=24)
    allocated, zeros = [], torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: allocated.append(a) or torch.empty(0))
    with pytest.raises(ValueError, match=r"does not fit this machine: the \d+ frames take .*GiB.*of RAM.*"
                                         r"at most \d+ frames per batch fit.*pixels per frame"):
        video.WanCoreVideoSize().make(vae, "custom", "480p", width, height, frames, batch)
    assert not allocated
    monkeypatch.setattr(torch, "zeros", zeros)
    (latent, w, h, f) = video.WanCoreVideoSize().make(vae, "custom", "480p", 832, 480, 81, 1)["result"]
    assert latent["samples"].shape == (1, 16, 21, 60, 104)


def test_video_size_refuses_a_decode_that_cannot_fit_the_gpu_even_in_tiles(env, monkeypatch):
    """A clip whose frames fit in RAM but whose decoder cannot work on the GPU even in the out-of-
    memory fallback's tiles: refused on the decode alone, naming the device, not the RAM. Break
    caught: the decode half of the check removed (the RAM check alone accepted it)."""
    video = ci.pack_module("nodes.video")
    vae = wan21_vae(device="cuda")
    memory(monkeypatch, ram_gib=64, device_gib=0.05)
    with pytest.raises(ValueError) as refused:
        video.WanCoreVideoSize().make(vae, "custom", "480p", 832, 480, 81, 1)
    message = str(refused.value)
    assert "decoding needs at least" in message and "cuda" in message and "256 px tiles" in message
    assert "RAM" not in message and message.count("GiB") == 2  # only the limit exceeded, once
    memory(monkeypatch, ram_gib=64, device_gib=8)
    video.WanCoreVideoSize().make(vae, "custom", "480p", 832, 480, 81, 1)


def test_video_size_names_only_the_limits_exceeded(env, monkeypatch):
    """On a CPU the frames and the decoder share the RAM: one problem, naming both amounts and the
    RAM once (an earlier main also listed the decode as a problem although it fitted)."""
    video = ci.pack_module("nodes.video")
    vae = wan21_vae()
    memory(monkeypatch, ram_gib=24)
    with pytest.raises(ValueError) as refused:
        video.WanCoreVideoSize().make(vae, "custom", "480p", 832, 480, 1025, 8)
    message = str(refused.value)
    assert message.count("of RAM") == 1 and "decoding needs" not in message


def test_prompt_count_must_fit_the_batch(env):
    """Two prompts for a batch of three latents: refused, naming both counts."""
    g = torch.Generator().manual_seed(1)
    pos = [[torch.randn(2, 512, 4096, generator=g), {}]]
    neg = [[torch.randn(1, 512, 4096, generator=g), {}]]
    with pytest.raises(ValueError, match=r"2 positive prompts for a batch of 3 latents"):
        with torch.inference_mode():
            ci.pack_module("nodes.sampler_nodes").WanCoreSampler().run(
                load(env, "t2v.safetensors"), pos, neg, {"samples": torch.zeros(3, 16, 2, 4, 6)}, seed=1, steps=2,
                guidance=5.0, shift=5.0, scheduler="unipc", denoise=1.0)


def test_wan_sampler_refuses_a_latent_whose_dit_activations_cannot_fit(env, monkeypatch):
    """The DiT's share of the estimate (row 1: latent, DiT activations at that token count, decode):
    ComfyUI's own activation estimate against the device, refused before the first step with the
    longest video that fits at this frame size; a device just large enough runs."""
    import comfy.model_management as mm

    host = ci.pack_module("nodes.host")
    model = load(env, "t2v.safetensors")
    shape = (1, 16, 5, 4, 6)
    dtype = model.model.get_dtype_inference()
    need = host.dit_activation_bytes(model.model.memory_usage_factor, shape, dtype)
    # the host's own estimate (BaseModel.memory_required, its branch for a GPU's memory-efficient
    # attention) for the batched conditional and unconditional passes
    import comfy.model_base

    monkeypatch.setattr(mm, "pytorch_attention_flash_attention", lambda: True)
    assert need == int(comfy.model_base.BaseModel.memory_required(model.model, (2,) + shape[1:]))
    monkeypatch.undo()
    monkeypatch.setattr(mm, "get_total_memory", lambda *a, **k: need - 1)
    pos, neg = conds()
    run = ci.pack_module("nodes.sampler_nodes").WanCoreSampler().run
    args = dict(seed=1, steps=1, guidance=5.0, shift=5.0, scheduler="unipc", denoise=1.0)
    with pytest.raises(ValueError, match=r"needs at least .* MiB for the DiT's activations .*at most 13 frames fit"):
        with torch.inference_mode():
            run(model, pos, neg, {"samples": torch.zeros(shape)}, **args)
    monkeypatch.setattr(mm, "get_total_memory", lambda *a, **k: need)
    with torch.inference_mode():
        run(model, pos, neg, {"samples": torch.zeros(shape)}, **args)
