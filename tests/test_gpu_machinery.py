"""The host's GPU-mode code, run on the CPU: what ``--cpu`` switches off for the other tests.

- DynamicVRAM (comfy-aimdo): ``comfy.memory_management.aimdo_enabled`` on and ``CoreModelPatcher``
  rebound to ``ModelPatcherDynamic``, as ComfyUI's ``main.py`` does on NVIDIA Linux: the host's
  construction of its lazy layers and their filling from the state dict. What needs a GPU does not
  run here: comfy-aimdo's reader (its memory map), ``HostBuffer``, ``ModelPatcherDynamic.load`` /
  ``partially_unload`` / ``partially_load`` and any DynamicVRAM forward; the GPU acceptance run
  (``benchmarks/gpu_check.py``, group ``t2v_dynamic``) runs them;
- low-VRAM partial loading: ``patch_model`` -> ``partially_unload`` -> ``partially_load`` cycles with
  a LoRA on every weight kind, compared with the fully loaded model and with native under the
  same cycle;
- the host's per-layer quantized formats (fp8, int8, mxfp8, nvfp4) against ``UNETLoader``'s path;
- the host's attention function, its dtype rules answered as a GPU without bf16 answers, the DiT's
  output dtype at the ``BaseModel`` boundary, Cancel inside a forward.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import comfy_inprocess as ci
from conftest import rel_err
from tiny_models.dit import TINY_T2V, fp8_state, random_dit_state
from tiny_models.gguf_files import write_dit_gguf
from tiny_models.loras import lora_state

TOL = 1e-5


@pytest.fixture(scope="module")
def state():
    return random_dit_state(TINY_T2V, seed=3)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, 6, 10, generator=g)
    return x, torch.tensor([0.93, 0.31]), torch.randn(2, 512, 4096, generator=g) * 0.5


def forward(patcher, x, sigma, ctx):
    with torch.no_grad():
        return patcher.model.apply_model(x, sigma, c_crossattn=ctx).float()


def same_tensor(a, b) -> bool:
    """Bit-equal values (quantized tensors compared dequantized, fp8 through their bytes)."""
    a = a.dequantize() if hasattr(a, "dequantize") and type(a).__name__ == "QuantizedTensor" else a
    b = b.dequantize() if hasattr(b, "dequantize") and type(b).__name__ == "QuantizedTensor" else b
    if a.element_size() == 1:
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    return a.shape == b.shape and torch.equal(a, b)


def comfy_names(sd):
    return {f"model.diffusion_model.{k}": v for k, v in sd.items()}


def quantized_file(sd, fmt, path, awq_layers=()):
    """A file in the host's per-layer quantized format (``_quantization_metadata`` header, one
    ``weight_scale`` (+ ``weight_scale_2`` for nvfp4) per block linear), made with the host's own
    quantizers, as Comfy-Org's repackaged fp8 / nvfp4 / mxfp8 / int8 files are. ``awq_layers``
    (nvfp4): more layers quantized AWQ-style, their input smoothed by a ``pre_quant_scale`` s (the
    weight stored is W / s, so the layer computes W x only when the host applies s to x)."""
    import comfy.quant_ops as qo

    layout = qo.get_layout_class(qo.QUANT_ALGOS[fmt]["comfy_tensor_layout"])
    g = torch.Generator().manual_seed(11)
    out, layers = {}, {}
    for k, v in sd.items():
        layer = k[: -len(".weight")]
        awq = layer in awq_layers
        if (awq or k.startswith("blocks.")) and k.endswith(".weight") and v.dim() == 2:
            if awq:
                scale = torch.rand(v.shape[1], generator=g) * 3.5 + 0.5
                v = v / scale
                out[layer + ".pre_quant_scale"] = scale.to(torch.bfloat16)
            q, params = layout.quantize(v.to(torch.bfloat16))
            out[k] = q
            if fmt == "nvfp4":
                out[layer + ".weight_scale"], out[layer + ".weight_scale_2"] = params.block_scale, params.scale
            else:
                out[layer + ".weight_scale"] = params.scale
            layers[layer] = {"format": fmt}
        else:
            out[k] = v.to(torch.bfloat16)
    meta = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    save_file(comfy_names(out), str(path), metadata=meta)
    return path


KINDS = ["bf16", "fp16", "scaled_fp8", "float8_e4m3fn", "int8_tensorwise", "gguf"]


@pytest.fixture(scope="module")
def files(state, tmp_path_factory):
    """kind -> (our file, native reference file, weight_dtype kept in both)."""
    base = tmp_path_factory.mktemp("gpu_machinery")
    out = {}
    for kind in ("bf16", "fp16"):
        dtype = getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[kind])
        path = base / f"{kind}.safetensors"
        save_file(comfy_names({k: v.to(dtype) for k, v in state.items()}), str(path))
        out[kind] = (path, path, kind)
    scaled, _ = fp8_state(state, torch.float8_e4m3fn, scaled=True)
    save_file(comfy_names(scaled), str(base / "scaled_fp8.safetensors"))
    out["scaled_fp8"] = (base / "scaled_fp8.safetensors",) * 2 + ("default",)
    for fmt in ("float8_e4m3fn", "int8_tensorwise"):
        path = quantized_file(state, fmt, base / f"{fmt}.safetensors")
        out[fmt] = (path, path, "default")
    gguf, decoded = write_dit_gguf(state, base / "wan.gguf")
    save_file(decoded, str(base / "gguf_decoded.safetensors"))
    out["gguf"] = (gguf, base / "gguf_decoded.safetensors", "default")
    return out


def load_pair(loaders, files, kind):
    import comfy.sd

    path, ref, keep = files[kind]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(keep)
    ours = loaders.load_wan_model(str(path), weight_dtype=keep)
    native = comfy.sd.load_diffusion_model(str(ref), model_options={"dtype": dtype} if dtype else {})
    return ours, native


# -- DynamicVRAM -----------------------------------------------------------------------------------


@pytest.fixture
def dynamic_vram(monkeypatch):
    """What ComfyUI's main.py sets when DynamicVRAM is on (NVIDIA Linux, comfy-aimdo installed)."""
    import comfy.memory_management
    import comfy.model_patcher

    monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", True)
    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcherDynamic)


def host_loading_error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the exact error is what is compared
        return type(e), str(e)
    return None


@pytest.mark.parametrize("kind", ["bf16", "scaled_fp8", "float8_e4m3fn"])
def test_dynamic_vram_reads_through_the_hosts_mapping_and_stops_where_native_stops(loaders, files, dynamic_vram, kind):
    """With DynamicVRAM the host reads files through comfy-aimdo's memory map, which needs a GPU:
    native and ours take that path and stop at the same place, with the same error."""
    import comfy.sd

    path = str(files[kind][0])
    native = host_loading_error(lambda: comfy.sd.load_diffusion_model(path))
    ours = host_loading_error(lambda: loaders.load_wan_model(path))
    assert native is not None and "aimdo" in native[1]
    assert ours == native


@pytest.fixture
def dynamic_vram_past_the_map(dynamic_vram, monkeypatch):
    """DynamicVRAM with the two GPU-only pieces of comfy-aimdo stood in for (the memory map is read
    as plain safetensors, the pinned host buffers are empty objects), so loading runs on to the
    host's lazily created layers and ``ModelPatcherDynamic`` with a CUDA load device, as on a GPU."""
    import comfy.memory_management
    import comfy.utils
    import comfy_aimdo.host_buffer

    real = comfy.utils.load_torch_file

    def read_without_map(*args, **kwargs):
        monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", False)
        try:
            return real(*args, **kwargs)
        finally:
            monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", True)

    monkeypatch.setattr(comfy.utils, "load_torch_file", read_without_map)
    monkeypatch.setattr(comfy_aimdo.host_buffer, "HostBuffer", lambda *a, **k: object())


@pytest.mark.parametrize("kind", ["bf16", "fp16", "scaled_fp8", "float8_e4m3fn", "int8_tensorwise"])
def test_dynamic_vram_lazy_layers_load_as_native(loaders, files, dynamic_vram_past_the_map, kind):
    """Under DynamicVRAM the host's Linear creates its weight only when the state dict arrives
    (today's main failed here with "Missing key(s)"). Ours: the same patcher kind, the same layer
    kinds, every tensor the same as native's, and the same output."""
    import comfy.model_patcher
    import comfy.sd

    cuda = torch.device("cuda", 0)
    path = str(files[kind][0])
    native = comfy.sd.load_diffusion_model(path, model_options={"load_device": cuda})
    ours = ci.pack_module("nodes.dit_loading").load_host_model(path, load_device=cuda)
    assert type(ours) is type(native) is comfy.model_patcher.ModelPatcherDynamic
    linear = lambda p: p.model.diffusion_model.blocks[0].ffn[0]  # noqa: E731
    assert type(linear(ours)).__qualname__ == type(linear(native)).__qualname__
    ours_sd = ours.model.diffusion_model.state_dict()
    native_sd = native.model.diffusion_model.state_dict()
    assert set(ours_sd) == set(native_sd)
    for key, value in native_sd.items():
        assert ours_sd[key].dtype == value.dtype, key
        assert same_tensor(ours_sd[key], value), key
    # (no forward here: with DynamicVRAM the weights are assigned as stored and cast on the GPU by
    # comfy-aimdo's loader, which does not run on a CPU; the forward of the same layers in every
    # classic loading mode is compared with native below)


# -- partial unload / reload with a LoRA on every weight kind ---------------------------------------


BLOCK_LINEARS = (".q", ".k", ".v", ".o", ".ffn.0", ".ffn.2")


def resident_block_linears(patcher) -> tuple:
    """(block linears the host holds resident, all block linears), by the host's own mark."""
    layers = [m for name, m in patcher.model.diffusion_model.named_modules()
              if name.startswith("blocks.") and name.endswith(BLOCK_LINEARS)]
    return [m for m in layers if getattr(m, "comfy_patched_weights", False)], layers


def load_part(patcher, device, budget=None) -> int:
    """The host's low-VRAM load (``patch_model`` with a budget) leaving some block linears resident
    and others offloaded; returns the budget (``budget``: use that one). The host reserves a cast
    buffer per offloaded layer that dwarfs a tiny model's weights, so the budget that splits the
    blocks is searched for (below 8x the model's size); unloading by ``partially_unload`` moves
    almost everything (its buffer grows with every layer moved: half the size asked moved 99.4-99.8%)."""
    low, high = 0, patcher.model_size() * 8
    for _ in range(30):  # bisection: more budget, more layers resident
        ask = budget or (low + high) // 2
        patcher.patch_model(device_to=device, lowvram_model_memory=ask, load_weights=True)
        resident, layers = resident_block_linears(patcher)
        if 0 < len(resident) < len(layers):
            return ask
        patcher.unpatch_model(device)
        if budget:
            break
        low, high = (ask, high) if not resident else (low, ask)
    raise AssertionError("no budget leaves part of the blocks resident")


def cycle(patcher, x, sigma, ctx, budget=None):
    """(budget, outputs) of: the model loaded in part (some block linears resident, others
    offloaded), after the host loads the rest (``partially_load``, which keeps the resident layers as
    they are), after it moves weights off again (``partially_unload``)."""
    import comfy.model_management as mm

    mm.unload_all_models()
    cpu = torch.device("cpu")
    budget = load_part(patcher, cpu, budget)
    try:
        outs = [forward(patcher, x, sigma, ctx)]
        patcher.partially_load(cpu, extra_memory=patcher.model_size() * 8)
        outs.append(forward(patcher, x, sigma, ctx))
        assert patcher.partially_unload(cpu, memory_to_free=patcher.model_size() // 2) > 0
        outs.append(forward(patcher, x, sigma, ctx))
        return budget, outs
    finally:
        patcher.unpatch_model(cpu)


def native_lora(patcher, lora, strength=1.0):
    import comfy.sd

    return comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_lora_applied_exactly_once_through_partial_unload_and_reload(loaders, files, kind):
    """The host frees VRAM by moving layers off the device (the VAE or the other A14B expert needs
    room) and brings them back. A LoRA must act exactly once on every layer at every stage, on the
    layers moved off and on those left resident: an earlier main applied it twice on GGUF / fp8
    layers moved off (0.88x-0.97x of its whole effect too much). Break caught (GGUF): the per-call
    patches also cleared by ``unpatch_model(unpatch_weights=False)``, which ``partially_load``
    calls: the resident layers lose the LoRA."""
    import comfy.model_management as mm

    lora = lora_state(TINY_T2V, "lightx2v", rank=64, seed=9)
    ours, native = load_pair(loaders, files, kind)
    x, sigma, ctx = inputs(seed=4)
    mm.load_models_gpu([ours])
    base = forward(ours, x, sigma, ctx)
    ours = native_lora(ours, lora)
    mm.load_models_gpu([ours])
    full = forward(ours, x, sigma, ctx)
    effect = rel_err(full, base)
    assert effect > 0.1  # the LoRA changes the output
    budget, stages = cycle(ours, x, sigma, ctx)
    # applied twice or lost on some layers, it would move the output by a good part of its effect
    for out in stages:
        assert rel_err(out, full) < 0.1 * effect
    if kind == "gguf":  # per-call patches: every stage equals native on the decoded weights
        native = native_lora(native, lora)
        mm.load_models_gpu([native])
        ref = forward(native, x, sigma, ctx)
        for out in [full] + stages:
            assert rel_err(out, ref) < TOL
        return
    # merged weights: the layers moved off take the patch per call (core's own LowVramPatch), with
    # the storage rounding native has under the same cycle (the same budget: the same layers moved)
    _, expected = cycle(native_lora(native, lora), x, sigma, ctx, budget)
    tol = 1e-2 if kind == "int8_tensorwise" else TOL  # int8 layers quantize their inputs (see below)
    for got, ref in zip(stages, expected):
        assert rel_err(got, ref) < tol


# -- the host's per-layer quantized formats ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "float8_e5m2", "int8_tensorwise", "mxfp8", "nvfp4"])
def test_per_layer_quantized_files_equal_unet_loader(loaders, state, tmp_path, fmt):
    """Comfy-Org's per-layer quantized files (``_quantization_metadata``): today's main loaded fp8
    and int8 with a warning and wrong output (relative error 1.3), and failed on nvfp4."""
    import comfy.model_management as mm
    import comfy.quant_ops as qo
    import comfy.sd

    if fmt not in qo.QUANT_ALGOS:
        pytest.skip(f"this ComfyUI has no {fmt} layout")
    path = str(quantized_file(state, fmt, tmp_path / f"{fmt}.safetensors"))
    ours, native = loaders.load_wan_model(path), comfy.sd.load_diffusion_model(path)
    w_ours, w_native = (p.model.diffusion_model.blocks[1].ffn[2].weight for p in (ours, native))
    assert type(w_ours) is type(w_native) is qo.QuantizedTensor
    assert torch.equal(w_ours.dequantize(), w_native.dequantize())
    x, sigma, ctx = inputs(seed=5)
    mm.load_models_gpu([ours, native])
    h = torch.randn(2, 7, TINY_T2V.dim, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():  # the same host layer: bit-equal outputs
        a, b = (p.model.diffusion_model.blocks[0].ffn[0] for p in (ours, native))
        assert torch.equal(a(h), b(h))
    # int8 layers also quantize their inputs per tensor, so the ~1e-6 by which our fp32 regions and
    # native's differ can flip roundings (measured: up to 4e-3 of native's own output for a 1e-6
    # relative change of its input); the other formats compare at 1e-5
    tol = 1e-2 if fmt == "int8_tensorwise" else TOL
    assert rel_err(forward(ours, x, sigma, ctx), forward(native, x, sigma, ctx)) < tol


def test_quantized_file_missing_its_scales_names_the_file(loaders, state, tmp_path):
    from safetensors import safe_open

    path = quantized_file(state, "int8_tensorwise", tmp_path / "good.safetensors")
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.endswith("blocks.0.ffn.0.weight_scale")}
        meta = f.metadata()
    broken = tmp_path / "wan_int8_noscale.safetensors"
    save_file(tensors, str(broken), metadata=meta)
    with pytest.raises(Exception, match=r"wan_int8_noscale\.safetensors.*(scale|format)"):
        loaders.load_wan_model(str(broken))
    meta = json.loads(meta["_quantization_metadata"])
    meta["layers"]["blocks.0.ffn.0"]["format"] = "int3_experimental"
    unknown = tmp_path / "wan_int3.safetensors"
    save_file({k: v for k, v in tensors.items()}, str(unknown), metadata={"_quantization_metadata": json.dumps(meta)})
    with pytest.raises(Exception, match=r"wan_int3\.safetensors"):
        loaders.load_wan_model(str(unknown))


# -- attention, dtypes, boundary, cancel ------------------------------------------------------------


def test_auto_attention_calls_the_hosts_function_at_call_time(loaders, files, monkeypatch):
    """``auto`` (the default) reaches the function native Wan calls, looked up per call, so the
    command line's choice and nodes that patch it after start-up apply; a forced backend does not."""
    import comfy.ldm.wan.model as native_wan

    calls = []
    real = native_wan.optimized_attention

    def patched(q, k, v, heads, *args, **kwargs):
        calls.append(q.shape)
        return real(q, k, v, heads, *args, **kwargs)

    ours = loaders.load_wan_model(str(files["bf16"][0]))  # loaded before the patch: looked up per call
    monkeypatch.setattr(native_wan, "optimized_attention", patched)
    x, sigma, ctx = inputs()
    out = forward(ours, x, sigma, ctx)
    assert len(calls) == 2 * TINY_T2V.num_layers  # self + cross attention per block
    forced = loaders.load_wan_model(str(files["bf16"][0]), attention="sdpa")
    calls.clear()
    assert rel_err(forward(forced, x, sigma, ctx), out) < TOL and not calls


@pytest.fixture
def gpu_without_bf16(monkeypatch):
    """The host's capability answers of a T4 / V100 / RTX 20xx: fp16 yes, bf16 no."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "should_use_fp16", lambda *a, **k: True)
    monkeypatch.setattr(mm, "should_use_bf16", lambda *a, **k: False)


@pytest.fixture
def gpu_preferring_bf16(monkeypatch):
    """The host's answers where bf16 is chosen (e.g. --bf16-unet, or a device without fast fp16)."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "should_use_fp16", lambda *a, **k: False)
    monkeypatch.setattr(mm, "should_use_bf16", lambda *a, **k: True)


@pytest.mark.parametrize("kind", ["bf16", "gguf"])
def test_bf16_compute_equals_native_in_bf16(loaders, files, gpu_preferring_bf16, kind):
    """bf16 compute, the precision many GPU users run: the host picks bf16 for ours as for native,
    and the outputs agree to bf16 accuracy (ours keeps the official fp32 regions; native does not)."""
    import comfy.sd

    path, ref, _ = files[kind]
    ours, native = loaders.load_wan_model(str(path)), comfy.sd.load_diffusion_model(str(ref))
    assert ours.model.get_dtype_inference() == native.model.get_dtype_inference() == torch.bfloat16
    assert ours.model.diffusion_model.compute_dtype == torch.bfloat16
    x, sigma, ctx = inputs()
    got, ref_out = forward(ours, x, sigma, ctx), forward(native, x, sigma, ctx)
    assert rel_err(got, ref_out) < 2e-2  # measured 0.006 (bf16 file) / 0.009 (GGUF)


@pytest.mark.parametrize("kind", ["bf16", "scaled_fp8", "gguf"])
def test_compute_dtype_follows_the_hosts_rules_on_a_gpu_without_bf16(loaders, files, gpu_without_bf16, kind):
    """Such a GPU computes Wan in fp16, as native picks it (Wan supports fp16, bf16, fp32); today's
    main computed in fp32 there. The fp16 output is compared with native's (tolerance for fp16)."""
    import comfy.sd

    path, ref, _ = files[kind]
    ours = loaders.load_wan_model(str(path))
    native = comfy.sd.load_diffusion_model(str(ref))
    assert ours.model.get_dtype_inference() == native.model.get_dtype_inference() == torch.float16
    assert ours.model.diffusion_model.compute_dtype == torch.float16
    x, sigma, ctx = inputs()
    # measured 5e-4 (bf16 file, scaled fp8) / 1.1e-3 (GGUF)
    assert rel_err(forward(ours, x, sigma, ctx), forward(native, x, sigma, ctx)) < 3e-3


def test_output_leaves_the_dit_in_fp32(loaders, files):
    """The head runs in fp32; the output is not rounded to the input's bf16 on its way to BaseModel."""
    ours = loaders.load_wan_model(str(files["bf16"][0]), weight_dtype="bf16")
    x, sigma, ctx = inputs()
    with torch.no_grad():
        out = ours.model.diffusion_model(x.to(torch.bfloat16), sigma * 1000, ctx.to(torch.bfloat16))
    assert out.dtype == torch.float32


def test_cancel_acts_inside_a_forward(loaders, files):
    """Cancel is checked before every block (the host's layers also check per layer), not only
    between sampling steps."""
    import comfy.model_management as mm

    ours = loaders.load_wan_model(str(files["gguf"][0]))
    x, sigma, ctx = inputs()
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            forward(ours, x, sigma, ctx)
    finally:
        mm.interrupt_current_processing(False)


def test_fp16_compute_does_not_depend_on_what_the_host_offloaded(loaders, files, gpu_without_bf16):
    """With fp16 weights resident in the compute dtype the host's layers do not cast; offloaded they
    do. The DiT's fp32 regions (time embedding, norms, head) must be fp32 either way: the output
    of a partially loaded model equals the fully loaded one."""
    import comfy.model_management as mm

    ours = loaders.load_wan_model(str(files["bf16"][0]))
    assert ours.model.diffusion_model.compute_dtype == torch.float16
    x, sigma, ctx = inputs(seed=7)
    mm.unload_all_models()
    mm.load_models_gpu([ours])
    full = forward(ours, x, sigma, ctx)
    mm.unload_all_models()
    cpu = torch.device("cpu")
    ours.patch_model(device_to=cpu, lowvram_model_memory=ours.model_size() // 3, load_weights=True)
    try:
        assert ours.model.model_lowvram
        assert torch.equal(forward(ours, x, sigma, ctx), full)
    finally:
        ours.unpatch_model(cpu)


def test_gguf_under_dynamic_vram_keeps_the_classic_patcher_and_its_output(loaders, files, dynamic_vram):
    """GGUF layers are ours (the host's dynamic loader cannot stream GGML blocks): with DynamicVRAM
    on, a GGUF DiT still loads, under the classic patcher (as ComfyUI-GGUF), with the same output
    and LoRA as with it off."""
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher

    lora = lora_state(TINY_T2V, "lightx2v", rank=16, seed=12)
    x, sigma, ctx = inputs(seed=8)
    outs = []
    for enabled in (True, False):
        comfy.memory_management.aimdo_enabled = enabled
        model = native_lora(loaders.load_wan_model(str(files["gguf"][0])), lora)
        assert type(model).__name__ == "WanCorePatcher"
        assert not isinstance(model, comfy.model_patcher.ModelPatcherDynamic)
        mm.load_models_gpu([model])
        outs.append(forward(model, x, sigma, ctx))
    assert torch.equal(outs[0], outs[1])


def test_ti2v_with_a_start_frame_compiles_without_graph_breaks(loaders, tmp_path):
    """TI2V-5B with per-token timesteps (a start frame): the whole forward is one graph (today's main
    broke it at a data-dependent check and torch.unique, and rebuilt its RoPE cache inside the
    graph); the compiled output equals the eager one."""
    from tiny_models.dit import TINY_TI2V

    path = tmp_path / "ti2v.safetensors"
    save_file(random_dit_state(TINY_TI2V, seed=13), str(path))
    dit = loaders.load_wan_model(str(path), attention="sdpa").model.diffusion_model
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 48, 3, 6, 10, generator=g)
    t = torch.full((1, 3 * 3 * 5), 700.0)
    t[:, :15] = 0.0  # the start frame's tokens
    ctx = torch.randn(1, 512, 4096, generator=g) * 0.5
    torch._dynamo.reset()
    compiled = torch.compile(dit.predict, backend="eager", fullgraph=True)
    with torch.no_grad():
        eager, graph = dit.predict(x, t, ctx), compiled(x, t, ctx)
    assert rel_err(graph, eager) < 1e-6

