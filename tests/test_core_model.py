"""The Wan DiT as ComfyUI's own MODEL: every file kind, LoRA in every layout, on every weight kind.

The reference is always the host's native path: the same file loaded by core's diffusion-model
loader (``comfy.sd.load_diffusion_model``, what ``UNETLoader`` calls) and patched by core's LoRA
code (``comfy.sd.load_lora_for_models``, what ``LoraLoader`` calls).  Outputs are compared through
``BaseModel.apply_model`` (model sampling, dtype handling and the diffusion model), fp32 on the CPU.

safetensors files (fp32 / bf16 / fp16, fp8, ComfyUI scaled fp8) and diffusers folders load the way
core loads them (the host's dtype rules and operations), so the reference is native on the same
file with the same options: by default (on the CPU the host widens to fp32), and keeping the
file's bf16 / fp16 storage (``weight_dtype`` = ``model_options["dtype"]``, what a GPU does) so
both merge a LoRA into the same storage with the same seeded stochastic rounding. GGUF weights
stay compact in our model and take LoRA patches per call on the decoded weight; native cannot read
GGUF, so its reference is the native model on the decoded weights saved as fp32.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

import comfy_inprocess as ci
from conftest import rel_err
from tiny_models.gguf_files import write_dit_gguf
from tiny_models.loras import lora_state, to_official
from tiny_models.dit import TINY_T2V, TINY_TI2V, fp8_state, random_dit_state, write_diffusers_folder

TOL = 1e-5


@pytest.fixture(scope="module")
def host():
    core = ci.host()
    import comfy.model_management as mm
    import comfy.sd

    return core, mm, comfy.sd


@pytest.fixture(scope="module")
def loaders():
    return ci.pack_module("nodes.loaders")


def inputs(cfg, batch=2, seed=0, frames=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, frames, 6, 10, generator=g)
    ctx = torch.randn(batch, 512, 4096, generator=g) * 0.5
    return x, torch.tensor([0.93, 0.31][:batch]), ctx


def run(patcher, x, sigma, ctx):
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    with torch.no_grad():
        return patcher.model.apply_model(x, sigma, c_crossattn=ctx).float()


def native_lora(patcher, lora, strength=1.0):
    import comfy.sd

    return comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0)[0]


# -- files of every kind, and the native reference for each --------------------------------------

KINDS = ["fp32", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2", "scaled_fp8", "gguf", "diffusers"]


def write_kind(kind, sd, cfg, folder):
    """(path of the file of ``kind``, path of the native reference file, native dtype option)."""
    folder.mkdir(parents=True, exist_ok=True)
    comfy_names = lambda d: {f"model.diffusion_model.{k}": v for k, v in d.items()}  # noqa: E731
    if kind in ("fp32", "bf16", "fp16"):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[kind]
        path = folder / f"wan_{kind}.safetensors"
        save_file(comfy_names({k: v.to(dtype) for k, v in sd.items()}), str(path))
        return path, path, dtype
    ref = folder / f"ref_{kind}.safetensors"
    if kind == "diffusers":
        path = write_diffusers_folder(sd, cfg, folder / "transformer", shards=2).parent
        save_file(sd, str(ref))
        return path, ref, None
    if kind == "gguf":
        path, decoded = write_dit_gguf(sd, folder / "wan.gguf")
        save_file(decoded, str(ref))
        return path, ref, None
    dtype = torch.float8_e5m2 if kind == "fp8_e5m2" else torch.float8_e4m3fn
    file_sd, _ = fp8_state(sd, dtype, scaled=kind == "scaled_fp8")
    path = folder / f"wan_{kind}.safetensors"
    save_file(comfy_names(file_sd), str(path))
    return path, path, None


@pytest.fixture(scope="module")
def t2v_files(tmp_path_factory):
    sd = random_dit_state(TINY_T2V, seed=3)
    base = tmp_path_factory.mktemp("core_model")
    return {kind: write_kind(kind, sd, TINY_T2V, base / kind) for kind in KINDS}


def load_pair(loaders, files, kind, keep_dtype=False):
    """Ours and native on the same file; ``keep_dtype`` keeps a bf16 / fp16 file's storage in both."""
    import comfy.sd

    path, ref, dtype = files[kind]
    keep = keep_dtype and kind in ("bf16", "fp16")
    ours = loaders.load_wan_model(str(path), weight_dtype=kind if keep else "default")
    native = comfy.sd.load_diffusion_model(str(ref), model_options={"dtype": dtype} if keep else {})
    return ours, native


# -- the MODEL itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS + ["bf16 kept", "fp16 kept"])
def test_every_file_kind_is_a_core_model_equal_to_native(host, loaders, t2v_files, kind):
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher

    ours, native = load_pair(loaders, t2v_files, kind.split()[0], keep_dtype=kind.endswith("kept"))
    if kind != "gguf":  # the host's own storage and compute dtypes, operations and patcher kind
        assert ours.model.get_dtype() == native.model.get_dtype()
        assert ours.model.get_dtype_inference() == native.model.get_dtype_inference()
        assert type(ours) is type(native)
        layer = lambda p: type(p.model.diffusion_model.blocks[0].ffn[0])  # noqa: E731
        assert layer(ours).__qualname__ == layer(native).__qualname__  # mixed-precision ops are made per load
        assert layer(ours).__module__ == layer(native).__module__ == "comfy.ops"
    assert isinstance(ours, comfy.model_patcher.ModelPatcher)
    assert isinstance(ours.model, comfy.model_base.WAN21) and type(native.model) is comfy.model_base.WAN21
    assert isinstance(ours.model.latent_format, comfy.latent_formats.Wan21)
    assert ours.model.model_sampling.shift == native.model.model_sampling.shift == 8.0
    assert ours.model.memory_usage_factor == native.model.memory_usage_factor
    x, sigma, ctx = inputs(TINY_T2V)
    # a GGUF layer decodes its weight at every call: the largest decode is working memory too
    decode = ci.pack_module("nodes.gguf_layers").largest_decode_bytes(ours.model.diffusion_model,
                                                                      ours.model.get_dtype_inference())
    assert (decode > 0) == (kind == "gguf")
    assert ours.model.memory_required(x.shape) == native.model.memory_required(x.shape) + decode
    assert rel_err(run(ours, x, sigma, ctx), run(native, x, sigma, ctx)) < TOL


def test_ti2v_is_wan22_with_per_frame_timesteps(host, loaders, tmp_path):
    """TI2V-5B: core WAN22, 48 channels; a start-image mask gives per-frame timesteps, as native."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.sd

    sd = random_dit_state(TINY_TI2V, seed=4)
    path = tmp_path / "ti2v.safetensors"
    save_file(sd, str(path))
    ours, native = loaders.load_wan_model(str(path)), comfy.sd.load_diffusion_model(str(path))
    assert isinstance(ours.model, comfy.model_base.WAN22) and type(native.model) is comfy.model_base.WAN22
    assert isinstance(ours.model.latent_format, comfy.latent_formats.Wan22)
    x, sigma, ctx = inputs(TINY_TI2V)
    mask = torch.ones(2, 1, 3, 6, 10)
    mask[:, :, 0] = 0.0  # first latent frame fixed (start image)
    outs = []
    for p in (ours, native):
        import comfy.model_management as mm

        mm.load_models_gpu([p])
        with torch.no_grad():
            outs.append(p.model.apply_model(x, sigma, c_crossattn=ctx, denoise_mask=mask).float())
    assert rel_err(outs[0], outs[1]) < TOL


# -- LoRA ----------------------------------------------------------------------------------------

LAYOUTS = ["lightx2v", "peft", "kohya", "diffusers", "loha", "lokr"]


def native_equivalent(lora, layout):
    """Native Wan reads no diffusers names; its reference gets the same LoRA under official names."""
    return to_official(lora) if layout == "diffusers" else lora


@pytest.mark.parametrize("layout", LAYOUTS)
def test_core_lora_loader_every_layout_equals_native(host, loaders, t2v_files, layout):
    lora = lora_state(TINY_T2V, layout, rank=64 if layout == "lightx2v" else 8)
    ours, native = load_pair(loaders, t2v_files, "fp32")
    x, sigma, ctx = inputs(TINY_T2V)
    base = run(native, x, sigma, ctx)
    ref = run(native_lora(native, native_equivalent(lora, layout)), x, sigma, ctx)
    got = run(native_lora(ours, lora), x, sigma, ctx)
    assert rel_err(ref, base) > 1e-2  # the LoRA changes the output
    assert rel_err(got, ref) < TOL


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "fp32"])
@pytest.mark.parametrize("layout", ["lightx2v", "peft"])
def test_lora_on_every_weight_kind_equals_native(host, loaders, t2v_files, kind, layout):
    lora = lora_state(TINY_T2V, layout, rank=64 if layout == "lightx2v" else 8, seed=5)
    ours, native = load_pair(loaders, t2v_files, kind, keep_dtype=True)
    x, sigma, ctx = inputs(TINY_T2V, seed=1)
    ref = run(native_lora(native, lora), x, sigma, ctx)
    got = run(native_lora(ours, lora), x, sigma, ctx)
    assert rel_err(got, ref) < TOL


@pytest.mark.parametrize("kind", ["gguf"])
def test_compact_weights_stay_compact_under_lora(host, loaders, t2v_files, kind):
    """GGUF weights are not rewritten: the patch is applied per call to the decoded weight (fp8 and
    scaled fp8 files take core's path: the LoRA is merged as core merges it, compared above)."""
    lora = lora_state(TINY_T2V, "lightx2v", rank=64)
    ours, _ = load_pair(loaders, t2v_files, kind)
    q = ours.model.diffusion_model.blocks[0].self_attn.q
    before = (q.weight.dtype, q.weight.data_ptr(), q.weight.clone())
    patched = native_lora(ours, lora)
    x, sigma, ctx = inputs(TINY_T2V)
    base = run(ours, x, sigma, ctx)
    assert rel_err(run(patched, x, sigma, ctx), base) > 1e-2  # the LoRA acts, though the weights are untouched
    assert (q.weight.dtype, q.weight.data_ptr()) == before[:2] and torch.equal(q.weight, before[2])
    assert set(q.patch_functions) == {"weight", "bias"}  # LoRA + diff_b, per call
    assert patched.model_size() == ours.model_size()


def test_stacked_fractional_negative_strengths(host, loaders, t2v_files):
    a, b = lora_state(TINY_T2V, "lightx2v", rank=16, seed=7), lora_state(TINY_T2V, "kohya", seed=8)
    for kind in ("fp32", "gguf"):
        ours, native = load_pair(loaders, t2v_files, kind)
        x, sigma, ctx = inputs(TINY_T2V, seed=2)
        ref = run(native_lora(native_lora(native, a, 0.6), b, -0.35), x, sigma, ctx)
        got = run(native_lora(native_lora(ours, a, 0.6), b, -0.35), x, sigma, ctx)
        assert rel_err(got, ref) < TOL, kind
        only_a = run(native_lora(ours, a, 0.6), x, sigma, ctx)
        assert rel_err(got, only_a) > 1e-3 and rel_err(only_a, run(ours, x, sigma, ctx)) > 1e-3  # both act


def partial_run(patcher, budget, x, sigma, ctx):
    """Output under a low-VRAM partial load with ``budget`` bytes (and how many layers were left behind)."""
    import comfy.model_management as mm

    mm.unload_all_models()
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=budget, load_weights=True)
    try:
        assert patcher.model.model_lowvram
        per_call = [m for m in patcher.model.modules() if any(getattr(f, "is_lowvram_patch", False)
                                                               for f in getattr(m, "weight_function", ()))]
        with torch.no_grad():
            return patcher.model.apply_model(x, sigma, c_crossattn=ctx).float(), len(per_call)
    finally:
        patcher.unpatch_model(torch.device("cpu"))


@pytest.mark.parametrize("kind", ["fp32", "bf16", "gguf", "scaled_fp8"])
def test_partial_load_patches_offloaded_layers_per_call(host, loaders, t2v_files, kind):
    """Low-VRAM partial loading (a small budget): layers left on the offload device get the LoRA
    per call. Reference: native under the same budget (for fp32 / compact weights also equal to
    the fully loaded native model; for bf16 core itself patches offloaded layers in fp32 and
    merged ones with bf16 rounding)."""
    lora = lora_state(TINY_T2V, "lightx2v", rank=64, seed=9)
    ours, native = load_pair(loaders, t2v_files, kind, keep_dtype=True)
    x, sigma, ctx = inputs(TINY_T2V, seed=3)
    ours_lora, native_lora_model = native_lora(ours, lora), native_lora(native, lora)
    budget = ours_lora.model_size() // 3
    got, left = partial_run(ours_lora, budget, x, sigma, ctx)
    assert left > 0, "no layer was left to per-call patching"
    ref, _ = partial_run(native_lora_model, budget, x, sigma, ctx) if kind != "gguf" else (
        run(native_lora_model, x, sigma, ctx), 0)
    assert rel_err(got, ref) < TOL
    if kind in ("fp32", "gguf"):
        assert rel_err(got, run(native_lora_model, x, sigma, ctx)) < TOL


def test_wan_lora_loader_node_reports_and_refuses(host, loaders, t2v_files, tmp_path, caplog):
    import folder_paths

    lora_mod = ci.pack_module("nodes.lora")
    folder = tmp_path / "loras"
    folder.mkdir()
    folder_paths.add_model_folder_path("loras", str(folder))
    good = lora_state(TINY_T2V, "lightx2v", rank=64)
    save_file(good, str(folder / "lightx2v_style.safetensors"))
    big = lora_state(TINY_T2V.__class__(dim=512, ffn_dim=512, num_heads=4, num_layers=2), "peft")
    save_file(big, str(folder / "wan14b_style.safetensors"))
    save_file({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(4, 2),
               "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 4)},
              str(folder / "sdxl_style.safetensors"))
    ours, native = load_pair(loaders, t2v_files, "fp32")
    node = lora_mod.WanCoreLoraLoader()
    with caplog.at_level(logging.INFO, logger="wan_core"):
        (patched,) = node.load(ours, "lightx2v_style.safetensors", 0.8)
    skipped = [r.getMessage() for r in caplog.records if "image-to-video" in r.getMessage()]
    assert len(skipped) == 1 and "lightx2v_style.safetensors" in skipped[0]
    x, sigma, ctx = inputs(TINY_T2V)
    assert rel_err(run(patched, x, sigma, ctx), run(native_lora(native, good, 0.8), x, sigma, ctx)) < TOL
    with pytest.raises(ValueError, match=r"wan14b_style\.safetensors: 0 of \d+ patched weights fit"):
        node.load(ours, "wan14b_style.safetensors", 1.0)
    with pytest.raises(ValueError, match=r"sdxl_style\.safetensors: none of its 2 tensors fit"):
        node.load(ours, "sdxl_style.safetensors", 1.0)


def test_diffusers_pipeline_lora_each_expert_its_half(host, loaders, t2v_files, tmp_path):
    """An A14B pipeline LoRA (transformer. + transformer_2.): each expert gets its own half."""
    lora_mod = ci.pack_module("nodes.lora")
    high = lora_state(TINY_T2V, "diffusers", seed=11, prefix="transformer.")
    low = lora_state(TINY_T2V, "diffusers", seed=12, prefix="transformer_2.")
    both = {**high, **low}
    x, sigma, ctx = inputs(TINY_T2V)
    for part, half, prefix in (("transformer (DiT / high-noise expert)", high, "transformer."),
                               ("transformer_2 (A14B low-noise expert)", low, "transformer_2.")):
        ours, native = load_pair(loaders, t2v_files, "gguf")
        got = run(lora_mod.apply_lora(ours, both, 1.0, "pipeline.safetensors", lora_mod.DIFFUSERS_PREFIXES[part]),
                  x, sigma, ctx)
        ref = run(native_lora(native, to_official(half, prefix)), x, sigma, ctx)
        assert rel_err(got, ref) < TOL, part
