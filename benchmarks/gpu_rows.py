"""One row group of the GPU acceptance run, in its own process (``gpu_check.py`` starts them).

    python benchmarks/gpu_rows.py ROW --models DIR --out rows.jsonl [--smoke]

Each measured case is appended to ``--out`` as one JSON line the moment it is measured (a run
killed later still returns it), with its PASS / FAIL threshold and what the host ran.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import time
import weakref
from pathlib import Path

import gpu_host  # torch is imported only once the host started (its allocator choice comes first)
import common  # noqa: F401,I001  (paths)

gpu_models = None  # imported after the host started (it imports torch)

FLAGS = {"t2v_dynamic": [], "t2v_classic": ["--disable-dynamic-vram"], "a14b": [], "decode": [], "compile": []}


class Rows:
    """Appends measured cases to the output file; keeps the host description and log lines."""

    def __init__(self, out: Path, host: dict, smoke: bool):
        self.out, self.host, self.smoke = out, host, smoke
        self.log = []
        handler = logging.Handler()
        handler.emit = lambda record: self.log.append(record.getMessage())
        logging.getLogger().addHandler(handler)

    def add(self, case: str, threshold: str, passed, **metrics) -> None:
        row = {"case": case, "threshold": threshold, "pass": None if self.smoke else passed, "host": self.host,
               **metrics}
        with open(self.out, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(("SMOKE " if self.smoke else ("PASS " if passed else "FAIL ")) + case, json.dumps(metrics, default=str),
              flush=True)

    def seen(self, text: str, since: int = 0) -> int:
        return sum(text in m for m in self.log[since:])


def torch_():
    import torch

    return torch


def cuda() -> bool:
    return torch_().cuda.is_available()


def sync():
    if cuda():
        torch_().cuda.synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def reset_peak():
    import comfy.model_management as mm

    gc.collect()
    mm.soft_empty_cache()
    if cuda():
        torch_().cuda.reset_peak_memory_stats()
        return torch_().cuda.memory_allocated()
    return 0


def peak_since(base: int):
    """The CUDA allocator's peak above ``base`` (None on the CPU)."""
    return torch_().cuda.max_memory_allocated() - base if cuda() else None


def gib(n):
    return None if n is None else round(n / 2**30, 3)


def rel(a, b) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def conditioning(seed=0):
    torch = torch_()
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]], [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]]


def ksample(model, latent, steps, cfg=5.0, seed=0):
    import nodes

    pos, neg = conditioning()
    return nodes.common_ksampler(model, seed, steps, cfg, "uni_pc", "simple", pos, neg,
                                 {"samples": latent})[0]["samples"]


def dtypes(model) -> dict:
    return {"patcher": type(model).__name__, "storage": str(model.model.get_dtype()),
            "compute": str(model.model.get_dtype_inference()),
            "layer": type(model.model.diffusion_model.blocks[0].ffn[0]).__qualname__}


def unload():
    import comfy.model_management as mm

    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache()


# -- rows ---------------------------------------------------------------------------------------------


def t2v(rows: Rows, a, models: Path):
    """1.3B bf16, ours (Wan Load DiT) against native (UNETLoader) through core KSampler, 4 UniPC
    steps with CFG; with DynamicVRAM also the cost of our fp32 regions at a longer clip."""
    import comfy.sd

    torch = torch_()
    loaders = gpu_host.pack_module("nodes.loaders")
    path = str(gpu_models.dit_file(models, "1.3B", a.smoke))
    sizes = [(a.width, a.height, a.frames, a.steps)]
    if a.row == "t2v_dynamic":
        sizes.append((a.width, a.height, a.long_frames, 2))
    got = {}
    for name, load in (("native", lambda: comfy.sd.load_diffusion_model(path)),
                       ("ours", lambda: loaders.load_wan_model(path))):
        unload()
        t_load, model = timed(load)
        for w, h, f, steps in sizes:
            latent = torch.zeros(1, 16, (f - 1) // 4 + 1, h // 8, w // 8)
            t_first, _ = timed(lambda: ksample(model, latent, steps))
            base = reset_peak()
            t_warm, out = timed(lambda: ksample(model, latent, steps))
            got[(name, f)] = dict(step_s=t_warm / steps, peak=peak_since(base), latent=out, first_s=t_first,
                                  load_s=t_load, **dtypes(model))
        model = None  # freed before the next one loads
    mode = "DynamicVRAM" if a.row == "t2v_dynamic" else "classic patcher"
    for w, h, f, steps in sizes:
        n, o = got[("native", f)], got[("ours", f)]
        diff, time_x = rel(o["latent"], n["latent"]), o["step_s"] / n["step_s"]
        peak_x = None if n["peak"] is None else o["peak"] / max(1, n["peak"])
        label = f"1.3B bf16 {w}x{h} {f} frames, {steps} steps, {mode}"
        for name, r in (("native", n), ("ours", o)):
            rows.add(f"{label}: {name}", "reference" if name == "native" else
                     "latent within 5e-2 of native; step time <= 1.10x and peak <= 1.10x native",
                     True if name == "native" else (diff < 5e-2 and time_x <= 1.10 and (peak_x is None or peak_x <= 1.10)),
                     step_s=round(r["step_s"], 4), first_job_s=round(r["first_s"], 2), load_s=round(r["load_s"], 2),
                     peak_gib=gib(r["peak"]), patcher=r["patcher"], storage=r["storage"], compute=r["compute"],
                     layer=r["layer"], **({} if name == "native" else
                                          {"latent_diff_vs_native": diff, "time_x": round(time_x, 3),
                                           "peak_x": None if peak_x is None else round(peak_x, 3)}))
        if f == a.long_frames:
            rows.add(f"fp32 regions cost at {f} frames (ours / native)", "step time <= 1.05x and peak <= 1.10x "
                     "(else keep them as an option)", time_x <= 1.05 and (peak_x is None or peak_x <= 1.10),
                     time_x=round(time_x, 3), peak_x=None if peak_x is None else round(peak_x, 3))


def a14b(rows: Rows, a, models: Path):
    """The A14B-width GGUF Q4_K pair with a LoRA each through Wan Sampler (4 steps, guidance 1):
    loaded fully, then under a budget that makes the host offload part of each expert."""
    import comfy.model_management as mm
    import comfy.sd
    import comfy.utils

    dq = gpu_host.pack_module("wan_core.gguf.dequant")  # the module the loaded layers use

    torch = torch_()
    loaders = gpu_host.pack_module("nodes.loaders")
    sampler = gpu_host.pack_module("nodes.sampler_nodes").WanCoreSampler()
    (hi_path, lo_path), (hi_lora, lo_lora) = gpu_models.a14b_files(models, a.smoke)
    experts = []
    for path, lora in ((hi_path, hi_lora), (lo_path, lo_lora)):
        model = loaders.load_wan_model(str(path))
        experts.append(comfy.sd.load_lora_for_models(model, None, comfy.utils.load_torch_file(str(lora)), 1.0, 0)[0])
    hi, lo = experts
    pos, neg = conditioning(1)
    latent = {"samples": torch.zeros(1, 16, (a.frames - 1) // 4 + 1, a.height // 8, a.width // 8)}

    def run():
        return sampler.run(hi, pos, neg, latent, 0, 4, 1.0, 5.0, "euler", 1.0, model_low_noise=lo,
                           guidance_low_noise=1.0, boundary=0.875)[0]["samples"]

    unload()
    timed(run)
    base = reset_peak()
    t_full, full = timed(run)
    rows.add("A14B GGUF Q4_K pair + LoRA each, loaded fully", "reference", True, job_s=round(t_full, 2),
             peak_gib=gib(peak_since(base)), blocks=gpu_models.A14B_BLOCKS if not a.smoke else None, **dtypes(hi))
    unload()
    device = mm.get_torch_device()
    size = hi.model_size()
    work = hi.model.memory_required(tuple(latent["samples"].shape)) + 0.8 * 2**30  # + the host's minimum
    free, reserve = mm.get_free_memory(device), mm.EXTRA_RESERVED_VRAM
    mm.EXTRA_RESERVED_VRAM = max(0, int(free - work - 0.6 * size))  # as --reserve-vram: room for 60% of one expert
    mark = len(rows.log)
    timed(run)
    base = reset_peak()
    t_tight, tight = timed(run)
    partial = rows.seen("loaded partially", mark) + rows.seen("Unloaded partially", mark)
    on_map = [p for p in mm.PINNED_MEMORY for m in (hi, lo)
              for start, end in getattr(m.model.diffusion_model, "mapped_ranges", ()) if start <= p < end]
    diff = rel(tight, full)
    rows.add(f"A14B pair, budget {gib(0.6 * size)} GiB of weights (reserve {gib(mm.EXTRA_RESERVED_VRAM)} GiB)",
             "partial loads happened; latent within 1e-3 of the full load; no pinned weight on the GGUF map",
             partial > 0 and diff < 1e-3 and not on_map, job_s=round(t_tight, 2), peak_gib=gib(peak_since(base)),
             partial_load_log_lines=partial, latent_diff_vs_full=diff, pinned_gib=gib(sum(mm.PINNED_MEMORY.values())),
             pinned_on_map=len(on_map))
    mm.EXTRA_RESERVED_VRAM = reserve
    unload()
    layer = hi.model.diffusion_model.blocks[0].ffn[0]
    raw = layer.weight.data.to(device)
    shape, numel = layer.logical_shape, layer.logical_shape[0] * layer.logical_shape[1]
    dtype = hi.model.get_dtype_inference()
    measured, chunk = {}, dq.CHUNK_VALUES
    for label, values in (("chunked", chunk), ("whole", 1 << 62)):
        dq.CHUNK_VALUES = values
        dq.dequantize(raw, layer.qtype, shape, dtype)
        base = reset_peak()
        t, w = timed(lambda: dq.dequantize(raw, layer.qtype, shape, dtype))
        measured[label] = (peak_since(base), t)
        del w
    dq.CHUNK_VALUES = chunk
    estimate = dq.dequant_workspace_bytes(layer.qtype, numel, dtype)
    got = measured["chunked"][0]
    rows.add(f"GGUF decode of one {shape[0]}x{shape[1]} Q4_K weight to {dtype}",
             "measured peak <= the estimate the host budgets", got is None or got <= estimate,
             peak_mib=None if got is None else round(got / 2**20, 1), estimate_mib=round(estimate / 2**20, 1),
             whole_tensor_peak_mib=None if measured["whole"][0] is None else round(measured["whole"][0] / 2**20, 1),
             chunked_ms=round(measured["chunked"][1] * 1e3, 2), whole_ms=round(measured["whole"][1] * 1e3, 2))


def decode(rows: Rows, a, models: Path):
    """A Wan2.2 decode of 121 frames at 1280x704 after the 5B DiT sampled (so it is resident):
    ours and core's, peak against the estimates; then ours with an out-of-memory error forced on
    the first attempt, the memory that attempt held still taken, so only a freed attempt fits."""
    import nodes

    import comfy.model_management as mm

    torch = torch_()
    gpu_host.use_model_folder(str(models))
    dit_path = gpu_models.dit_file(models, "5B", a.smoke)
    gpu_models.vae22_file(models, a.smoke)
    loaders = gpu_host.pack_module("nodes.loaders")
    video = gpu_host.pack_module("nodes.video")
    from wan_core.vae import decode_bytes

    dit = loaders.load_wan_model(str(dit_path))
    ksample(dit, torch.zeros(1, 48, 2, 12, 20), 1, cfg=1.0)  # the DiT is now loaded
    w, h, f = a.decode_size
    z = torch.randn(1, 48, (f - 1) // 4 + 1, h // 16, w // 16, generator=torch.Generator().manual_seed(0))
    vae = loaders.WanCoreLoadVAE().load(gpu_models.VAE22, "default")[0]
    estimate = decode_bytes(vae.model.config, z.shape, vae.model.dtype)
    mark = len(rows.log)
    base = reset_peak()
    t, (frames, _) = timed(lambda: video.WanCoreDecode().decode(vae, {"samples": z}, False, 512, 64))
    peak = peak_since(base)
    tiles = rows.seen("retrying in tiles", mark)
    rows.add(f"Wan2.2 decode {f} frames {w}x{h} after the 5B DiT: ours ({vae.model.dtype})",
             "peak <= our estimate (wan_core/vae/memory.py); no fallback to tiles",
             (peak is None or peak <= estimate) and not tiles, s=round(t, 2), peak_gib=gib(peak),
             estimate_gib=gib(estimate), fell_back_to_tiles=bool(tiles), dit_loaded=dit.loaded_size() > 0)
    del frames
    core_vae = nodes.VAELoader().load_vae(gpu_models.VAE22)[0]
    core_estimate = core_vae.memory_used_decode(z.shape, core_vae.vae_dtype)
    mark = len(rows.log)
    base = reset_peak()
    t, (images,) = timed(lambda: nodes.VAEDecode().decode(core_vae, {"samples": z}))
    peak_core = peak_since(base)
    rows.add(f"Wan2.2 decode {f} frames {w}x{h} after the 5B DiT: core VAEDecode ({core_vae.vae_dtype})", "reference",
             True, s=round(t, 2), peak_gib=gib(peak_core), estimate_gib=gib(core_estimate),
             fell_back_to_tiles=bool(rows.seen("Ran out of memory when regular VAE decoding", mark)),
             ours_peak_x=None if peak is None or not peak_core else round(peak / peak_core, 3))
    del images
    core_vae = None
    unload()
    # forced out-of-memory: the failed attempt takes all but a quarter of what the tiled decode needs
    device = vae.patcher.load_device
    tiled = decode_bytes(vae.model.config, z.shape, vae.model.dtype, tile=video.FALLBACK_TILE_PX // 16)
    real, held = vae.model.decode, []

    def failing(x, on_frames=None, sink=None):
        vae.model.decode = real
        if device.type == "cuda":
            free = mm.get_free_memory(device)
            hog = torch.empty(max(0, int(free - tiled // 4)), dtype=torch.uint8, device=device)
            held.append(weakref.ref(hog))
        raise torch.OutOfMemoryError("CUDA out of memory (forced by the GPU acceptance run)")

    vae.model.decode = failing
    mark = len(rows.log)
    base = reset_peak()
    try:
        t, _ = timed(lambda: video.WanCoreDecode().decode(vae, {"samples": z}, False, 512, 64))
        error = None
    except Exception as e:  # noqa: BLE001 - the row reports it
        t, error = None, f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        vae.model.decode = real
    rows.add(f"Wan2.2 decode {f} frames {w}x{h}, out of memory forced on the first attempt",
             "the tiled fallback ran and finished although the failed attempt had taken the memory",
             error is None and rows.seen("retrying in tiles", mark) > 0,
             s=None if t is None else round(t, 2), peak_gib=gib(peak_since(base)), tiled_estimate_gib=gib(tiled),
             error=error, held_free_at_end=all(r() is None for r in held))


def compile_row(rows: Rows, a, models: Path):
    """1.3B ours under core TorchCompileModel (inductor): first (compiling) and warm steps."""
    import comfy_extras.nodes_torch_compile as tc

    torch = torch_()
    loaders = gpu_host.pack_module("nodes.loaders")
    model = loaders.load_wan_model(str(gpu_models.dit_file(models, "1.3B", a.smoke)))
    latent = torch.zeros(1, 16, (a.frames - 1) // 4 + 1, a.height // 8, a.width // 8)
    steps = 2
    ksample(model, latent, steps)
    t_eager, eager = timed(lambda: ksample(model, latent, steps))
    compiled = gpu_host.run_io_node(tc.TorchCompileModel, model=model, backend="inductor")[0]
    t_first, _ = timed(lambda: ksample(compiled, latent, steps))
    t_warm, out = timed(lambda: ksample(compiled, latent, steps))
    diff = rel(out, eager)
    rows.add(f"1.3B ours + TorchCompileModel, {a.frames} frames {a.width}x{a.height}",
             "latent within 1e-2 of eager; warm step not slower than eager", diff < 1e-2 and t_warm <= t_eager,
             step_s=round(t_warm / steps, 4), eager_step_s=round(t_eager / steps, 4),
             first_compiling_job_s=round(t_first, 1), latent_diff_vs_eager=diff)


ROWS = {"t2v_dynamic": t2v, "t2v_classic": t2v, "a14b": a14b, "decode": decode, "compile": compile_row}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("row", choices=sorted(ROWS))
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--long-frames", type=int, default=81)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--decode-size", type=int, nargs=3, default=[1280, 704, 121])
    a = ap.parse_args()
    host = gpu_host.start(FLAGS[a.row] + (["--cpu"] if a.smoke else []))
    global gpu_models
    import gpu_models
    rows = Rows(Path(a.out), host, a.smoke)
    print("host:", json.dumps(host), flush=True)
    torch_().manual_seed(0)
    ROWS[a.row](rows, a, Path(a.models))


if __name__ == "__main__":
    main()
