"""Core nodes that act on a MODEL, on our Wan MODEL and on the native one: equal results.

Each graph is built the same way on both models (the same file, loaded by Wan Load DiT and by
core's diffusion-model loader) and sampled by core's own sampler: ModelSamplingSD3 + KSampler
(euler, uni_pc), SamplerCustomAdvanced, EasyCache / LazyCache (the same steps skipped),
WanContextWindowsManual over a latent longer than its window, CFGZeroStar, APG,
SkipLayerGuidanceDiT, NAGuidance, and the model patches behind them (attn1 / attn2 patches,
attention output patches, the attention override switch, block replacement).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import comfy_inprocess as ci
from conftest import rel_err
from tiny_models.dit import TINY_T2V, random_dit_state

TOL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ci.host()
    import comfy.sd

    loaders = ci.pack_module("nodes.loaders")
    path = tmp_path_factory.mktemp("core_nodes") / "wan2.1_t2v_tiny.safetensors"
    save_file({f"model.diffusion_model.{k}": v for k, v in random_dit_state(TINY_T2V, seed=21).items()}, str(path))

    def pair():
        return loaders.load_wan_model(str(path)), comfy.sd.load_diffusion_model(str(path))

    return pair


def conds(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(batch, 512, 4096, generator=g) * 0.5
    neg = torch.randn(batch, 512, 4096, generator=g) * 0.5
    return [[pos, {}]], [[neg, {}]]


def latent(frames=3, batch=1):
    return {"samples": torch.zeros(batch, 16, frames, 6, 10)}


class Counter:
    """Counts diffusion-model passes (ours: wan_core's predict; native: WanModel.forward_orig)."""

    def __init__(self, patcher):
        dm = patcher.model.diffusion_model
        name = "predict" if hasattr(dm, "predict") else "forward_orig"
        inner = getattr(dm, name)
        self.calls = 0

        def counted(*args, **kwargs):
            self.calls += 1
            return inner(*args, **kwargs)

        setattr(dm, name, counted)


def ksampler(model, sampler="euler", steps=4, cfg=5.0, seed=7, lat=None, pos_neg=None):
    import nodes as core

    pos, neg = pos_neg or conds()
    return core.common_ksampler(model, seed, steps, cfg, sampler, "simple", pos, neg, lat or latent())[0]["samples"]


def both(models, patch, **sample_kwargs):
    """(ours, native) latents after ``patch(model)`` and KSampler, with diffusion-model pass counts."""
    out = []
    for model in models():
        patched = patch(model)
        counter = Counter(patched)
        out.append((ksampler(patched, **sample_kwargs), counter.calls))
    return out


def shift(model, value=5.0):
    return ci.run_node("ModelSamplingSD3", model=model, shift=value)[0]


@pytest.mark.parametrize("sampler", ["euler", "uni_pc"])
def test_ksampler_after_model_sampling_sd3(models, sampler):
    (ours, n_ours), (native, n_native) = both(models, shift, sampler=sampler)
    assert n_ours == n_native == 4  # cond + uncond batched: one pass per step
    assert rel_err(ours, native) < TOL


def test_sampler_custom_advanced(models):
    outs = []
    for model in models():
        model = shift(model, 8.0)
        pos, neg = conds(1)
        guider = ci.run_node("CFGGuider", model=model, positive=pos, negative=neg, cfg=4.0)[0]
        sampler = ci.run_node("KSamplerSelect", sampler_name="dpmpp_2m")[0]
        sigmas = ci.run_node("BasicScheduler", model=model, scheduler="simple", steps=5, denoise=1.0)[0]
        noise = ci.run_node("RandomNoise", noise_seed=3)[0]
        outs.append(ci.run_node("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler,
                                sigmas=sigmas, latent_image=latent())[0]["samples"])
    assert rel_err(outs[0], outs[1]) < TOL


@pytest.mark.parametrize("node", ["EasyCache", "LazyCache"])
def test_step_caches_skip_the_same_steps(models, node):
    # Random weights change the output ~0.6 per step (trained models far less), so the default
    # threshold 0.2 would skip nothing here; 1.0 makes the caches skip every other step or so.
    def patch(model):
        return ci.run_node(node, model=shift(model), reuse_threshold=1.0, start_percent=0.1, end_percent=0.95,
                           verbose=False)[0]

    (ours, n_ours), (native, n_native) = both(models, patch, steps=14, sampler="euler")
    assert n_ours == n_native < 14  # some steps were skipped, the same number
    assert rel_err(ours, native) < TOL


@pytest.mark.parametrize("fuse_method,freenoise", [("pyramid", False), ("pyramid", True), ("flat", True)])
def test_context_windows_over_a_longer_latent(models, fuse_method, freenoise):
    """WanContextWindowsManual: 9 latent frames (33 video frames) in windows of 17 frames, overlap 8;
    with FreeNoise as the shipped long-video workflow uses it."""

    def patch(model):
        return ci.run_node("WanContextWindowsManual", model=shift(model), context_length=17, context_overlap=8,
                           context_schedule="standard_static", context_stride=1, closed_loop=False,
                           fuse_method=fuse_method, freenoise=freenoise)[0]

    (ours, n_ours), (native, n_native) = both(models, patch, lat=latent(frames=9), steps=3)
    assert n_ours == n_native > 3  # several windows per step
    assert rel_err(ours, native) < TOL


@pytest.mark.parametrize("name,kwargs", [
    ("CFGZeroStar", {}),
    ("APG", {"eta": 0.5, "norm_threshold": 5.0, "momentum": -0.5}),
    ("SkipLayerGuidanceDiT", {"double_layers": "1", "single_layers": "", "scale": 3.0, "start_percent": 0.0,
                              "end_percent": 1.0, "rescaling_scale": 0.0}),
])
def test_guidance_patches(models, name, kwargs):
    (ours, n_ours), (native, n_native) = both(models, lambda m: ci.run_node(name, model=shift(m), **kwargs)[0])
    assert n_ours == n_native
    assert rel_err(ours, native) < TOL


def test_skip_layer_guidance_really_skips(models):
    """The block replacement takes effect on ours (the result differs from plain CFG)."""
    ours, _ = models()
    plain = ksampler(shift(ours))
    slg = ci.run_node("SkipLayerGuidanceDiT", model=shift(ours), double_layers="0, 1", single_layers="", scale=3.0,
                      start_percent=0.0, end_percent=1.0, rescaling_scale=0.0)[0]
    assert rel_err(ksampler(slg), plain) > 1e-3


@pytest.fixture
def native_output_patch_call_site(monkeypatch):
    """ComfyUI 0.30's native Wan self-attention never calls ``attn1_output_patch`` (so NAG has no
    effect on native Wan). Ours does, after the output projection, as core's transformer block
    does. For the comparison the native self-attention gets the same call site, in this test only."""
    import comfy.ldm.wan.model as wan

    inner = wan.WanSelfAttention.forward

    def forward(self, x, freqs, transformer_options={}):
        out = inner(self, x, freqs, transformer_options=transformer_options)
        for p in transformer_options.get("patches", {}).get("attn1_output_patch", []):
            out = p(out, transformer_options)
        return out

    monkeypatch.setattr(wan.WanSelfAttention, "forward", forward)


def test_nag_at_guidance_one(models, native_output_patch_call_site):
    def patch(model):
        return ci.run_node("NAGuidance", model=shift(model), nag_scale=5.0, nag_alpha=0.5, nag_tau=1.5)[0]

    (ours, n_ours), (native, n_native) = both(models, patch, cfg=1.0)
    assert n_ours == n_native == 4  # NAG keeps the negative pass at cfg 1 (batched with the positive)
    assert rel_err(ours, native) < TOL
    plain, _ = models()
    assert rel_err(ours, ksampler(shift(plain), cfg=1.0)) > 1e-3  # NAG changed the result


def test_attention_patches_and_override(models):
    """attn1_patch / attn2_patch and the optimized_attention_override switch, as native calls them."""
    seen = {}

    def attn1(args):
        seen.setdefault("attn1", 0)
        seen["attn1"] += 1
        assert args["q"].dim() == 4 and args["k"].shape == args["q"].shape
        return args["x"] * 0.9

    def attn2(args):
        seen.setdefault("attn2", 0)
        seen["attn2"] += 1
        return args["x"] * 1.05

    def override(func, *args, **kwargs):
        seen.setdefault("override", 0)
        seen["override"] += 1
        opts = kwargs["transformer_options"]
        seen.setdefault("sites", set()).add((opts["block_index"], opts["total_blocks"], tuple(opts["grid_sizes"])))
        return func(*args, **kwargs)

    def patch(model):
        m = shift(model).clone()
        m.set_model_attn1_patch(attn1)
        m.set_model_attn2_patch(attn2)
        m.model_options["transformer_options"]["optimized_attention_override"] = override
        return m

    counts = []
    outs = []
    for model in models():
        seen.clear()
        outs.append(ksampler(patch(model), steps=2))
        counts.append({k: v for k, v in seen.items() if k != "sites"})
        assert seen["sites"] == {(0, 2, (3, 3, 5)), (1, 2, (3, 3, 5))}
    assert counts[0] == counts[1] and counts[0]["override"] == 2 * 2 * 2  # 2 steps x 2 blocks x (self, cross)
    assert rel_err(outs[0], outs[1]) < TOL


def test_torch_compile_model(models):
    """Core TorchCompileModel compiles our diffusion model (inductor, CPU); same result as uncompiled."""
    ours, native = models()
    compiled = ci.run_node("TorchCompileModel", model=shift(ours), backend="inductor")[0]
    got = ksampler(compiled, steps=2)
    assert rel_err(got, ksampler(shift(native), steps=2)) < 1e-5
    assert rel_err(got, ksampler(shift(ours), steps=2)) < 1e-5


def test_multigpu_work_units_deepclone(models, tmp_path):
    """MultiGPU_WorkUnits clones the model once per extra GPU through the loader's factory
    (cached_patcher_init). This machine has one device, so the node adds no clone; the per-device
    clone it would make is built here directly: a fresh load from our loader, LoRA patches carried."""
    import comfy.sd

    from tiny_models.loras import lora_state

    ours, native = models()
    lora = lora_state(TINY_T2V, "lightx2v", rank=16, seed=3)
    patched = comfy.sd.load_lora_for_models(shift(ours), None, lora, 0.7, 0)[0]
    node_out = ci.run_node("MultiGPU_WorkUnits", model=patched, max_gpus=2)[0]
    assert node_out.get_additional_models_with_key("multigpu") == []  # one device: nothing to split
    clone = patched.deepclone_multigpu(new_load_device=torch.device("cpu"))
    assert clone.model is not patched.model and clone.model.diffusion_model is not patched.model.diffusion_model
    ref = ksampler(comfy.sd.load_lora_for_models(shift(native), None, lora, 0.7, 0)[0], steps=2)
    assert rel_err(ksampler(clone, steps=2), ref) < TOL
    assert rel_err(ksampler(node_out, steps=2), ref) < TOL


def test_torch_compile_does_not_recompile_per_step(models):
    """Compiled through core's wrapper (as TorchCompileModel does, guard filter included), our
    forward is traced once: later steps and a second sampling run reuse the graphs."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    import torch._dynamo

    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    ours, _ = models()
    model = shift(ours).clone()
    torch._dynamo.reset()
    nodes_torch_compile = ci.host().NODE_CLASS_MAPPINGS["TorchCompileModel"]
    import inspect

    guard_filter = inspect.getmodule(nodes_torch_compile).skip_torch_compile_dict
    set_torch_compile_wrapper(model=model, backend=counting_backend, options={"guard_filter_fn": guard_filter})
    first = ksampler(model, steps=3)
    after_first = len(graphs)
    second = ksampler(model, steps=3, seed=8)
    assert after_first >= 1 and len(graphs) == after_first, (after_first, len(graphs))
    assert rel_err(first, ksampler(shift(ours), steps=3)) < 1e-5
    assert not torch.equal(first, second)
