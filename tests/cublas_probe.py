"""Run as a script (its own process): ``--fast cublas_ops`` with a stand-in for the ``cublas_ops``
package, whose GEMM asserts half-precision operands as the real cuBLAS kernel requires.

The stand-in must be importable before the host imports ``comfy.ops`` (which decides at import
whether cublas ops exist), hence a process of its own. The host answers as a GPU without bf16
(fp16 compute), so ``pick_operations`` returns its ``cublas_ops`` for an fp16 file, for our DiT
and for native alike. Prints one JSON line: the layer class, the stand-in's call count, the first
error of each model and the relative difference of the outputs.

    python tests/cublas_probe.py FILE.safetensors
"""

import json
import os
import sys
import types

import torch
import torch.nn.functional as F

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

CALLS = []


def cublas_half_matmul(x, weight, bias, epilogue_str, has_bias):
    operands = [x, weight] + ([bias] if bias is not None else [])
    assert all(t.dtype == torch.float16 for t in operands), \
        f"cuBLAS half GEMM given {[str(t.dtype) for t in operands]}"
    CALLS.append(tuple(x.shape))
    return F.linear(x, weight, bias)


class CublasLinear(torch.nn.Linear):
    """The package's layer: fp16 weights, its forward is the half GEMM."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=torch.float16, epilogue_str="NONE"):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._epilogue_str, self.has_bias = epilogue_str, bias

    def forward(self, x):
        return cublas_half_matmul(x, self.weight, self.bias, self._epilogue_str, self.has_bias)


def main():
    sys.modules["cublas_ops"] = types.SimpleNamespace(CublasLinear=CublasLinear, cublas_half_matmul=cublas_half_matmul)
    import comfy_inprocess as ci

    ci.host()
    import comfy.cli_args
    import comfy.model_management as mm
    import comfy.ops
    import comfy.sd

    comfy.cli_args.args.fast = {comfy.cli_args.PerformanceFeature.CublasOps}
    mm.should_use_fp16 = lambda *a, **k: True  # a GPU without bf16 (T4, V100, RTX 20xx)
    mm.should_use_bf16 = lambda *a, **k: False
    path = sys.argv[1]
    loaders = ci.pack_module("nodes.loaders")
    g = torch.Generator().manual_seed(0)
    x, sigma = torch.randn(2, 16, 3, 6, 10, generator=g), torch.tensor([0.93, 0.31])
    ctx = torch.randn(2, 512, 4096, generator=g) * 0.5
    result = {"cublas_available": comfy.ops.CUBLAS_IS_AVAILABLE}
    outs = {}
    for name, load in (("native", lambda: comfy.sd.load_diffusion_model(path)),
                       ("ours", lambda: loaders.load_wan_model(path))):
        patcher = load()
        dit = patcher.model.diffusion_model
        result[f"{name}_time_layer"] = type(dit.time_embedding[0]).__qualname__
        result[f"{name}_compute"] = str(patcher.model.get_dtype_inference())
        del CALLS[:]
        try:
            with torch.no_grad():
                outs[name] = patcher.model.apply_model(x, sigma, c_crossattn=ctx).float()
            result[f"{name}_error"] = None
        except AssertionError as e:
            result[f"{name}_error"] = str(e)
        result[f"{name}_gemms"] = len(CALLS)
    if len(outs) == 2:
        a, b = outs["ours"].double(), outs["native"].double()
        result["rel_diff"] = float((a - b).abs().max() / b.abs().max())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
