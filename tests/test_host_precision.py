"""The DiT's precision regions on the host's layers, under the compute dtypes GPUs use.

- The official fp32 regions (time embedding and projection, head) stay fp32 under bf16 / fp16
  compute: checked on the regions themselves against the official model's fp32 modules on the
  same (rounded) weights, where a whole-model comparison with native (which computes them in the
  compute dtype) cannot tell.
- Host layers that need their input in the compute dtype get it: ``--fast cublas_ops`` (a stand-in
  package whose GEMM asserts half-precision operands, in its own process) and per-layer quantized
  AWQ layers whose ``pre_quant_scale`` is applied in their ``forward``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import rel_err
from test_dit_parity import official_model
from test_gpu_machinery import comfy_names, quantized_file
from tiny_models.dit import TINY_T2V, random_dit_state

TESTS = os.path.dirname(os.path.abspath(__file__))
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module")
def state():
    return random_dit_state(TINY_T2V, seed=21)


@pytest.mark.parametrize("compute", ["bf16", "fp16"])
def test_time_embedding_and_head_stay_fp32_under_reduced_compute(loaders, state, tmp_path, monkeypatch, compute):
    """Under the compute dtype a GPU picks, the time embedding, its projection and the head compute
    in fp32 from the stored weights, as the official code does under fp32 autocast: their outputs
    are fp32 and equal the official modules' on the same weights (measured: 0, bit-equal). Breaks
    caught: the time embedding / projection run in the compute dtype (measured 3.5e-3 / 3.8e-3 in
    bf16, 4.2e-4 / 4.7e-4 in fp16), the head run in the weights' dtype and then upcast (3.4e-3 in bf16, 3.0e-4 in fp16)."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "should_use_fp16", lambda *a, **k: compute == "fp16")
    monkeypatch.setattr(mm, "should_use_bf16", lambda *a, **k: compute == "bf16")
    dtype = DTYPES[compute]
    stored = {k: v.to(dtype) for k, v in state.items()}
    path = tmp_path / f"wan_{compute}.safetensors"
    save_file(comfy_names(stored), str(path))
    dit = loaders.load_wan_model(str(path)).model.diffusion_model
    assert dit.compute_dtype == dtype
    ref = official_model(TINY_T2V, {k: v.float() for k, v in stored.items()})  # the same rounded weights
    off = sys.modules[type(ref).__module__]
    t = torch.tensor([937.0, 311.5])
    tokens = 30
    with torch.no_grad():
        e, e0, index = dit.embed_time(t, 2, tokens)
        ref_e = ref.time_embedding(off.sinusoidal_embedding_1d(TINY_T2V.freq_dim, t).float())
        ref_e0 = ref.time_projection(ref_e).unflatten(1, (6, TINY_T2V.dim))
        x = torch.randn(2, tokens, TINY_T2V.dim, generator=torch.Generator().manual_seed(3))
        head = dit.head(x, e, index)
        ref_head = ref.head(x, ref_e[:, None].expand(2, tokens, -1))
    assert e.dtype == e0.dtype == head.dtype == torch.float32
    assert rel_err(e, ref_e) < 1e-6
    assert rel_err(e0, ref_e0) < 1e-6
    assert rel_err(head, ref_head) < 1e-6


def test_cublas_ops_layers_get_half_precision_input(state, tmp_path):
    """``--fast cublas_ops`` on a GPU without bf16 (fp16 file, fp16 compute): every host Linear is a
    cuBLAS half GEMM, including the ones in our fp32 regions. Those must get fp16 input (their
    output is upcast); the old fp32 input reached the GEMM as fp32 operands. Ours then equals native
    (both on the same cuBLAS layers) to fp16 accuracy (measured 6.3e-4)."""
    path = tmp_path / "wan_fp16.safetensors"
    save_file(comfy_names({k: v.to(torch.float16) for k, v in state.items()}), str(path))
    run = subprocess.run([sys.executable, os.path.join(TESTS, "cublas_probe.py"), str(path)], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": TESTS})
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["cublas_available"] and r["ours_compute"] == r["native_compute"] == "torch.float16"
    assert r["ours_time_layer"] == r["native_time_layer"] == "cublas_ops.Linear"
    assert r["native_error"] is None and r["ours_error"] is None, r
    assert r["ours_gemms"] >= r["native_gemms"] > 0
    assert r["rel_diff"] < 3e-3


def test_awq_quantized_layer_in_an_fp32_region_equals_unet_loader(loaders, state, tmp_path, monkeypatch):
    """A per-layer quantized (nvfp4) file whose ``time_projection`` is AWQ-quantized with a
    ``pre_quant_scale``, under bf16 compute (a GPU's): the host layer applies the scale in its
    ``forward``, so ours must call it as native does (the old fp32 path called its cast function
    directly and skipped the scale). Compared with ``UNETLoader`` on the same file at bf16 accuracy
    (measured 4.5e-3; with the scale skipped, the old path: 0.14)."""
    import comfy.model_management as mm
    import comfy.quant_ops as qo
    import comfy.sd

    monkeypatch.setattr(mm, "should_use_fp16", lambda *a, **k: False)
    monkeypatch.setattr(mm, "should_use_bf16", lambda *a, **k: True)

    path = str(quantized_file(state, "nvfp4", tmp_path / "wan_nvfp4_awq.safetensors", awq_layers=("time_projection.1",)))
    ours, native = loaders.load_wan_model(path), comfy.sd.load_diffusion_model(path)
    layer = ours.model.diffusion_model.time_projection[1]
    assert isinstance(layer.weight, qo.QuantizedTensor) and layer.pre_quant_scale is not None
    assert ours.model.diffusion_model.compute_dtype == torch.bfloat16
    g = torch.Generator().manual_seed(5)
    x, sigma = torch.randn(2, 16, 3, 6, 10, generator=g), torch.tensor([0.93, 0.31])
    ctx = torch.randn(2, 512, 4096, generator=g) * 0.5
    mm.load_models_gpu([ours, native])  # resident: the classic patcher does not cast these layers
    with torch.no_grad():
        got, ref = (p.model.apply_model(x, sigma, c_crossattn=ctx).float() for p in (ours, native))
    assert rel_err(got, ref) < 2e-2
