"""Wan Sampler on ComfyUI's sampling machinery.

- Numerics unchanged: Wan Sampler (core guider + our SAMPLER / SIGMAS / NOISE) equals the wan_core
  loop alone, which tests/test_sampling.py proves equal to the official loops and diffusers'
  WanPipeline; for every solver, the A14B expert switch, TI2V's start frame, denoise, batches.
- The same through core SamplerCustomAdvanced with our SAMPLER / SIGMAS / NOISE / expert GUIDER.
- Patches on the incoming MODEL apply: EasyCache / LazyCache skip the same steps as in front of
  core KSampler on the native model; WanContextWindowsManual; CFGZeroStar, APG, NAGuidance.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

import comfy_inprocess as ci
from conftest import rel_err
from tiny_models.gguf_files import write_dit_gguf
from tiny_models.dit import TINY_T2V, TINY_TI2V, random_dit_state

TOL = 1e-5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ci.host()
    base = tmp_path_factory.mktemp("wan_sampler")
    paths = {}
    save_file({f"model.diffusion_model.{k}": v for k, v in random_dit_state(TINY_T2V, seed=31).items()},
              str(base / "t2v.safetensors"))
    paths["t2v"] = base / "t2v.safetensors"
    save_file(random_dit_state(TINY_TI2V, seed=32), str(base / "ti2v.safetensors"))
    paths["ti2v"] = base / "ti2v.safetensors"
    for name, seed in (("high", 33), ("low", 34)):
        paths[name] = write_dit_gguf(random_dit_state(TINY_T2V, seed=seed), base / f"A14B-{name}.gguf")[0]
    return paths


def load(env, name):
    with torch.inference_mode():  # as in a node: the weights are inference tensors
        return ci.pack_module("nodes.loaders").load_wan_model(str(env[name]))


def native(env, name):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(env[name]))


def conds(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 512, 4096, generator=g) * 0.5, torch.randn(batch, 512, 4096, generator=g) * 0.5


def wan_sampler(model, pos, neg, latent, **kw):
    args = dict(seed=7, steps=4, guidance=5.0, shift=5.0, scheduler="unipc", denoise=1.0)
    args.update(kw)
    node = ci.pack_module("nodes.sampler_nodes").WanCoreSampler()
    with torch.inference_mode():  # as ComfyUI executes nodes
        return node.run(model, [[pos, {}]], [[neg, {}]], latent if isinstance(latent, dict) else {"samples": latent},
                        **args)[0]["samples"]


def core_loop(model, pos, neg, latent, model_low=None, start_latent=None, **kw):
    """The wan_core loop alone on the same DiT(s) (no ComfyUI sampling)."""
    sampling = ci.pack_module("wan_core.sampling.sampler")
    settings = dict(seed=7, steps=4, guidance=5.0, shift=5.0, scheduler="unipc", denoise=1.0)
    settings.update(kw)
    low = None if model_low is None else model_low.model.diffusion_model
    return sampling.sample(model.model.diffusion_model, pos, neg, latent, sampling.SamplerSettings(**settings),
                           model_low=low, start_latent=start_latent)


@pytest.mark.parametrize("scheduler,steps,guidance", [("unipc", 6, 5.0), ("dpm++", 5, 4.0), ("euler", 4, 3.0),
                                                      ("dmd", 3, 1.0), ("unipc", 3, 1.0)])
def test_equals_wan_core_loop(env, scheduler, steps, guidance):
    model = load(env, "t2v")
    pos, neg = conds()
    lat = torch.zeros(1, 16, 3, 6, 10)
    got = wan_sampler(model, pos, neg, lat, scheduler=scheduler, steps=steps, guidance=guidance)
    ref = core_loop(model, pos, neg, lat, scheduler=scheduler, steps=steps, guidance=guidance)
    assert rel_err(got, ref) < TOL


def test_denoise_batch_seeds_and_sequential_cfg(env):
    model = load(env, "t2v")
    pos, neg = conds(1, batch=2)
    g = torch.Generator().manual_seed(5)
    video = torch.randn(2, 16, 3, 6, 10, generator=g)
    got = wan_sampler(model, pos, neg, video, denoise=0.6, steps=5)
    assert rel_err(got, core_loop(model, pos, neg, video, denoise=0.6, steps=5)) < TOL
    seq = wan_sampler(model, pos, neg, video, denoise=0.6, steps=5, cfg_mode="sequential")
    assert rel_err(seq, got) < TOL
    one = wan_sampler(model, pos[1:], neg[1:], video[1:], denoise=0.6, steps=5, seed=8)  # item 1 == seed + 1 alone
    assert rel_err(got[1:], one) < TOL


def test_a14b_expert_switch(env):
    high, low = load(env, "high"), load(env, "low")
    pos, neg = conds(2)
    lat = torch.zeros(1, 16, 3, 6, 10)
    kw = dict(steps=8, shift=12.0, guidance=4.0)
    got = wan_sampler(high, pos, neg, lat, model_low_noise=low, guidance_low_noise=3.0, boundary=0.875, **kw)
    ref = core_loop(high, pos, neg, lat, model_low=low, guidance_low=3.0, boundary=0.875, **kw)
    assert rel_err(got, ref) < TOL
    only_high = wan_sampler(high, pos, neg, lat, **kw)
    assert rel_err(got, only_high) > 1e-3  # the low-noise expert took part


def test_ti2v_start_frame_through_core_noise_mask(env):
    """TI2V-5B start image: core's noise-mask convention (as Wan Video Size and core's
    Wan22ImageToVideoLatent write it) == the wan_core loop's fixed first frame."""
    import comfy.latent_formats

    model = load(env, "ti2v")
    pos, neg = conds(3)
    g = torch.Generator().manual_seed(6)
    start = torch.randn(1, 48, 1, 6, 10, generator=g)  # an encoded image, raw VAE space
    mask = torch.ones(1, 1, 3, 6, 10)
    mask[:, :, :1] = 0.0
    samples = comfy.latent_formats.Wan22().process_out(torch.zeros(1, 48, 3, 6, 10))
    samples[:, :, :1] = start
    got = wan_sampler(model, pos, neg, {"samples": samples, "noise_mask": mask}, steps=5)
    ref = core_loop(model, pos, neg, torch.zeros(1, 48, 3, 6, 10), start_latent=start, steps=5)
    assert rel_err(got, ref) < TOL
    assert rel_err(got[:, :, :1], start) < 1e-5


def test_sampler_custom_advanced_with_our_objects(env):
    """SamplerCustomAdvanced(Wan Noise, CFGGuider / Wan A14B Expert Guider, Wan Sampler Select,
    Wan Sigmas) == Wan Sampler == the wan_core loop."""
    nodes = ci.pack_module("nodes.sampler_nodes")
    pos, neg = conds(4)
    lat = torch.zeros(1, 16, 3, 6, 10)
    model = load(env, "t2v")
    shifted = ci.run_node("ModelSamplingSD3", model=model, shift=5.0)[0]
    guider = ci.run_node("CFGGuider", model=shifted, positive=[[pos, {}]], negative=[[neg, {}]], cfg=5.0)[0]
    out = ci.run_node("SamplerCustomAdvanced", noise=nodes.WanCoreNoise().get(7)[0], guider=guider,
                      sampler=nodes.WanCoreSamplerSelect().get("dpm++")[0],
                      sigmas=nodes.WanCoreSigmas().get("dpm++", 5, 5.0, 1.0)[0], latent_image={"samples": lat})[0]
    ref = core_loop(model, pos, neg, lat, scheduler="dpm++", steps=5)
    assert rel_err(out["samples"], ref) < TOL
    assert rel_err(out["samples"], wan_sampler(model, pos, neg, lat, scheduler="dpm++", steps=5)) < TOL

    high, low = load(env, "high"), load(env, "low")
    guider = nodes.WanCoreExpertGuider().get(high, low, [[pos, {}]], [[neg, {}]], 4.0, 3.0, 0.875)[0]
    out = ci.run_node("SamplerCustomAdvanced", noise=nodes.WanCoreNoise().get(7)[0], guider=guider,
                      sampler=nodes.WanCoreSamplerSelect().get("unipc")[0],
                      sigmas=nodes.WanCoreSigmas().get("unipc", 8, 12.0, 1.0)[0], latent_image={"samples": lat})[0]
    ref = core_loop(high, pos, neg, lat, model_low=low, guidance=4.0, guidance_low=3.0, steps=8, shift=12.0)
    assert rel_err(out["samples"], ref) < TOL


def recording_timesteps(model):
    """The MODEL with a unet wrapper that records the model timestep of every DiT call (sigma * 1000)."""
    seen = []
    model = model.clone()

    def wrapper(apply_model, args):
        seen.append(float(args["timestep"].flatten()[0]) * 1000)
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(wrapper)
    return model, seen


@pytest.mark.parametrize("scheduler", ["unipc", "dpm++", "euler"])
def test_sampler_select_on_sigmas_not_from_wan_sigmas(env, scheduler):
    """Wan Sampler Select on a core scheduler's grid (BasicScheduler "beta", which starts at sigma 1: no
    official grid to look up): the model gets sigma * 1000, truncated to integers for UniPC / DPM++ as
    the official solvers do, and the run starts from core's scaled noise. Euler on that path is core's
    own "euler". (UniPC gave an all-NaN latent here: log-SNR at sigma 1 is -inf.)"""
    nodes = ci.pack_module("nodes.sampler_nodes")
    pos, neg = conds(5)
    lat = torch.zeros(1, 16, 3, 6, 10)
    shifted = ci.run_node("ModelSamplingSD3", model=load(env, "t2v"), shift=5.0)[0]
    sigmas = ci.run_node("BasicScheduler", model=shifted, scheduler="beta", steps=5, denoise=1.0)[0]
    recorded, seen = recording_timesteps(shifted)
    guider = ci.run_node("CFGGuider", model=recorded, positive=[[pos, {}]], negative=[[neg, {}]], cfg=5.0)[0]
    out = ci.run_node("SamplerCustomAdvanced", noise=nodes.WanCoreNoise().get(7)[0], guider=guider,
                      sampler=nodes.WanCoreSamplerSelect().get(scheduler)[0], sigmas=sigmas,
                      latent_image={"samples": lat})[0]["samples"]
    expected = (sigmas[:-1].double() * 1000).float()
    if scheduler != "euler":  # log-SNR solvers start just below sigma 1, as core's own (here: t = 999)
        import comfy.k_diffusion.sampling as k

        start = k.offset_first_sigma_for_snr(sigmas, shifted.get_model_object("model_sampling"))
        assert sigmas[0] == 1.0 and 0.9999 < start[0] < 1.0
        expected = torch.trunc(start[:-1].double() * 1000).float()
    assert torch.allclose(torch.tensor(seen), expected, atol=1e-3), (seen, expected)
    assert torch.isfinite(out).all()
    if scheduler == "euler":
        guider = ci.run_node("CFGGuider", model=shifted, positive=[[pos, {}]], negative=[[neg, {}]], cfg=5.0)[0]
        core = ci.run_node("SamplerCustomAdvanced", noise=nodes.WanCoreNoise().get(7)[0], guider=guider,
                           sampler=ci.run_node("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas,
                           latent_image={"samples": lat})[0]["samples"]
        assert rel_err(out, core) < TOL


def test_official_grids_stay_known_while_in_use():
    """The grid cache: a grid looked up between others stays official (pure-noise start, its own
    timesteps) past the cache size; one not used since is forgotten and takes the fallback."""
    sampling = ci.pack_module("nodes.sampling")
    used = sampling.official_sigmas("unipc", 7, 5.0)
    idle = sampling.official_sigmas("unipc", 9, 5.0)
    official = sampling.grid_info("unipc", used)
    assert official[1] and torch.equal(official[0], sampling.make_schedule("unipc", 7, 5.0).timesteps)
    for i in range(sampling.GRID_CACHE_SIZE + 10):
        sampling.official_sigmas("euler", 2 + i % 150, 1.0 + i / 97)
        if i % 100 == 0:
            assert sampling.grid_info("unipc", used)[1]
    assert sampling.grid_info("unipc", used)[1]
    timesteps, from_noise = sampling.grid_info("unipc", idle)
    assert not from_noise and torch.equal(timesteps, sampling.timesteps_for("unipc", idle))


# -- patches on the incoming MODEL, against core KSampler on the native model ---------------------
# Wan Sampler with euler and a step count dividing 1000 uses the same grid as KSampler's "simple"
# scheduler after ModelSamplingSD3 with the same shift, and the same noise for one seed.


def ksampler_native(model, pos, neg, latent, steps, cfg, shift=5.0, seed=7):
    import nodes as core

    model = ci.run_node("ModelSamplingSD3", model=model, shift=shift)[0]
    return core.common_ksampler(model, seed, steps, cfg, "euler", "simple", [[pos, {}]], [[neg, {}]],
                                {"samples": latent})[0]["samples"]


def dit_passes(model):
    dm = model.model.diffusion_model
    return dm.passes if hasattr(dm, "passes") else None


@pytest.mark.parametrize("node", ["EasyCache", "LazyCache"])
def test_step_caches_in_front_of_wan_sampler(env, node, caplog):
    # threshold 1.0: random weights change ~0.6 per step (see test_core_nodes), the default 0.2 skips nothing
    def cached(m):
        return ci.run_node(node, model=m, reuse_threshold=1.0, start_percent=0.1, end_percent=0.95, verbose=False)[0]

    pos, neg = conds(5)
    lat = torch.zeros(1, 16, 3, 6, 10)
    steps = 20
    ours = load(env, "t2v")
    before = dit_passes(ours)
    with caplog.at_level(logging.INFO, logger="wan_core"):
        got = wan_sampler(cached(ours), pos, neg, lat, scheduler="euler", steps=steps, guidance=5.0)
    our_passes = dit_passes(ours) - before
    ref_model = native(env, "t2v")
    calls = []
    inner = ref_model.model.diffusion_model.forward_orig

    def counted(*a, **k):
        calls.append(1)
        return inner(*a, **k)

    ref_model.model.diffusion_model.forward_orig = counted
    ref = ksampler_native(cached(ref_model), pos, neg, lat, steps, 5.0)
    assert our_passes == len(calls) < steps
    assert rel_err(got, ref) < TOL
    report = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Wan Sampler:")]
    assert report == [f"Wan Sampler: {steps} steps, {our_passes} DiT passes ({steps - our_passes} steps served by "
                      f"the step cache: {steps - our_passes} of {steps} DiT passes saved)"]


@pytest.mark.parametrize("freenoise", [False, True])
def test_context_windows_in_front_of_wan_sampler(env, freenoise):
    """A latent longer than the window (9 latent frames = 33 video frames; windows of 17, overlap 8),
    with and without FreeNoise (the shipped long-video workflow uses it)."""

    def windows(m, freenoise=freenoise):
        return ci.run_node("WanContextWindowsManual", model=m, context_length=17, context_overlap=8,
                           context_schedule="standard_static", context_stride=1, closed_loop=False,
                           fuse_method="pyramid", freenoise=freenoise)[0]

    pos, neg = conds(6)
    lat = torch.zeros(1, 16, 9, 6, 10)
    got = wan_sampler(windows(load(env, "t2v")), pos, neg, lat, scheduler="euler", steps=4)
    ref = ksampler_native(windows(native(env, "t2v")), pos, neg, lat, 4, 5.0)
    assert rel_err(got, ref) < TOL
    if freenoise:  # FreeNoise really acted (it reorders the noise across windows)
        plain = wan_sampler(windows(load(env, "t2v"), False), pos, neg, lat, scheduler="euler", steps=4)
        assert rel_err(got, plain) > 1e-3


@pytest.mark.parametrize("name,kwargs,cfg", [
    ("CFGZeroStar", {}, 5.0),
    ("APG", {"eta": 0.5, "norm_threshold": 5.0, "momentum": -0.5}, 5.0),
    ("NAGuidance", {"nag_scale": 5.0, "nag_alpha": 0.5, "nag_tau": 1.5}, 1.0),
])
def test_guidance_patches_in_front_of_wan_sampler(env, name, kwargs, cfg):
    """The patched MODEL in front of Wan Sampler == in front of core KSampler (same model, same grid)."""
    import nodes as core

    pos, neg = conds(7)
    lat = torch.zeros(1, 16, 3, 6, 10)
    model = ci.run_node(name, model=load(env, "t2v"), **kwargs)[0]
    got = wan_sampler(model, pos, neg, lat, scheduler="euler", steps=4, guidance=cfg)
    shifted = ci.run_node("ModelSamplingSD3", model=model, shift=5.0)[0]
    ref = core.common_ksampler(shifted, 7, 4, cfg, "euler", "simple", [[pos, {}]], [[neg, {}]],
                               {"samples": lat})[0]["samples"]
    assert rel_err(got, ref) < TOL
    plain = wan_sampler(load(env, "t2v"), pos, neg, lat, scheduler="euler", steps=4, guidance=cfg)
    assert rel_err(got, plain) > 1e-4  # the patch took effect


def test_text_projection_reused_within_a_run(env, monkeypatch):
    """The text's embedding and cross-attention keys/values are projected once per sampling run (as
    wan_core's loop does): one projection for batched CFG over 4 steps, results identical to
    projecting every step, nothing kept after the run, and a LoRA on those weights is honoured."""
    import gc

    import comfy.sd

    from tiny_models.loras import lora_state

    adapter = ci.pack_module("nodes.model_adapter")
    model = load(env, "t2v")
    dit = model.model.diffusion_model
    calls = []
    inner = dit.prepare_text

    def counted(context):
        calls.append(context.shape[0])
        return inner(context)

    dit.prepare_text = counted
    pos, neg = conds(8)
    lat = torch.zeros(1, 16, 3, 6, 10)
    got = wan_sampler(model, pos, neg, lat, steps=4)
    assert calls == [2]  # cond + uncond batched, once for 4 steps
    gc.collect()
    assert adapter._RUN_TEXT == {}
    monkeypatch.setattr(adapter, "TEXT_KV_REUSE_MAX_TOKENS", 0)
    assert torch.equal(wan_sampler(model, pos, neg, lat, steps=4), got)
    monkeypatch.undo()
    lora = {k: v for k, v in lora_state(TINY_T2V, "lightx2v", rank=16, seed=4).items() if ".cross_attn." in k}
    patched = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0]
    calls.clear()
    with_lora = wan_sampler(patched, pos, neg, lat, steps=4)
    assert calls == [2] and rel_err(with_lora, got) > 1e-3
    monkeypatch.setattr(adapter, "TEXT_KV_REUSE_MAX_TOKENS", 0)
    assert torch.equal(wan_sampler(patched, pos, neg, lat, steps=4), with_lora)


def test_text_projection_follows_a_lora_added_between_runs_on_the_same_sigmas(env):
    """ComfyUI's cache hands the same SIGMAS object to the next prompt when only the model changed.
    The text projected in the first run (keyed by that object) must not serve a run whose
    text-embedding / cross-attention weights now carry a LoRA: the second run equals a fresh one.
    Break caught: the projection cache keyed without the weights and patches (10.6% off a fresh run
    when this was found)."""
    import comfy.sd

    from tiny_models.loras import lora_state

    nodes = ci.pack_module("nodes.sampler_nodes")
    pos, neg = conds(5)
    lat = {"samples": torch.zeros(1, 16, 3, 6, 10)}
    sigmas = nodes.WanCoreSigmas().get("euler", 4, 5.0, 1.0)[0]  # the one object both prompts get

    def run(model, sigmas):
        shifted = ci.run_node("ModelSamplingSD3", model=model, shift=5.0)[0]
        guider = ci.run_node("CFGGuider", model=shifted, positive=[[pos, {}]], negative=[[neg, {}]], cfg=5.0)[0]
        with torch.inference_mode():
            return ci.run_node("SamplerCustomAdvanced", noise=nodes.WanCoreNoise().get(7)[0], guider=guider,
                               sampler=nodes.WanCoreSamplerSelect().get("euler")[0], sigmas=sigmas,
                               latent_image=lat)[0]["samples"]

    model = load(env, "t2v")
    first = run(model, sigmas)
    lora = {k: v for k, v in lora_state(TINY_T2V, "lightx2v", rank=16, seed=6).items()
            if ".cross_attn." in k}
    patched = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0]
    again = run(patched, sigmas)
    fresh = run(patched, sigmas.clone())
    assert rel_err(fresh, first) > 1e-3  # the LoRA acts on the video
    assert torch.equal(again, fresh)


def test_a14b_low_noise_expert_is_loaded_only_when_sampling_reaches_it(env, monkeypatch):
    """Through Wan Sampler (the node path), ComfyUI is asked to load the low-noise expert only once
    the high-noise expert has run its steps, never both before the first step (twice the VRAM at
    the start). Every ``load_models_gpu`` call is recorded with the DiT passes made so far. Break
    caught: both experts loaded together before sampling."""
    import comfy.model_management as mm

    high, low = load(env, "high"), load(env, "low")
    dits = {"high": high.model.diffusion_model, "low": low.model.diffusion_model}
    calls, real = [], mm.load_models_gpu

    def recording(models, *args, **kwargs):
        loaded = {name for name, dit in dits.items()
                  for m in models if getattr(getattr(m, "model", None), "diffusion_model", None) is dit}
        calls.append((loaded, dits["high"].passes, dits["low"].passes))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(mm, "load_models_gpu", recording)
    pos, neg = conds(6)
    mm.unload_all_models()
    wan_sampler(high, pos, neg, torch.zeros(1, 16, 3, 6, 10), steps=8, shift=12.0, guidance=4.0,
                model_low_noise=low, guidance_low_noise=3.0, boundary=0.875)
    first_low = next(i for i, (loaded, *_) in enumerate(calls) if "low" in loaded)
    assert all("low" not in loaded for loaded, *_ in calls[:first_low])
    _, high_passes, low_passes = calls[first_low]
    assert high_passes > 0 and low_passes == 0  # the high expert had run; the low one had not yet
    assert any("high" in loaded for loaded, *_ in calls[:first_low])
