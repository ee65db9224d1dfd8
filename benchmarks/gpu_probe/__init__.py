"""A benchmark-only ComfyUI node (never installed with the pack): the CUDA memory the server used.

``benchmarks/gpu_check.py`` links this folder into the custom nodes of the servers it starts and
puts the node at the end of each graph: it reports the torch allocator's peak since the previous
report (then resets it) and the device memory in use at that moment (which also counts memory
that comfy-aimdo's DynamicVRAM maps outside the torch allocator).
"""

import torch


class WanBenchCudaPeak:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "report"
    CATEGORY = "_benchmark"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def report(self, samples):
        if not torch.cuda.is_available():
            return {"ui": {"cuda_peak_bytes": [0], "device_used_bytes": [0]}}
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        free, total = torch.cuda.mem_get_info()
        torch.cuda.reset_peak_memory_stats()
        return {"ui": {"cuda_peak_bytes": [int(peak)], "device_used_bytes": [int(total - free)]}}


class WanBenchCudaPeakImage(WanBenchCudaPeak):
    """The same probe after a decode (IMAGE input)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("IMAGE",)}}


NODE_CLASS_MAPPINGS = {"WanBenchCudaPeak": WanBenchCudaPeak, "WanBenchCudaPeakImage": WanBenchCudaPeakImage}
