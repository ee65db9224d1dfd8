"""The whole text-to-video job through a headless ComfyUI: our API workflow against the native one
(core UNETLoader, CLIPLoader, VAELoader, CLIPTextEncode, EmptyHunyuanLatentVideo, ModelSamplingSD3,
KSampler, VAEDecode, CreateVideo, SaveVideo) on the same files.

The files are written once in the real layouts and at the real sizes (random weights): umt5-xxl
as ``umt5_xxl_fp8_e4m3fn_scaled.safetensors`` (6.7 GB), the Wan2.1 1.3B DiT as
``wan2.1_t2v_1.3B_fp16.safetensors``, the Wan2.1 VAE.  Each implementation gets a fresh server;
it runs one job per step count, each with its own prompt and seed (so every stage but the loaders
runs again), and the script prints wall time per prompt, time per stage (from the server's
websocket events), the server's peak RSS, ours / native ratios, and how the time ratio moves with
the step count.

    python benchmarks/bench_workflow.py                        # 9 frames 256x256, 2 and 4 steps
    python benchmarks/bench_workflow.py --models /tmp/wanbench  # keep the 9.5 GB of files for re-runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
import torch

from common import status_bytes, table
from wan_client.api import finished
from wan_client.server import ComfyServer
from wan_client.workflow import Workflow

ROOT = Path(common.ROOT)
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
DIT = "wan2.1_t2v_1.3B_fp16.safetensors"
VAE = "wan_2.1_vae.safetensors"
PROMPTS = [
    "A red fox trots through fresh snow in a birch forest at golden hour, cinematic lighting.",
    "Two astronauts float inside a space station, slow motion, soft light through the windows.",
    "一只猫在草地上散步，写实风格，阳光明媚。",
    "An old man plays the violin in a rainy street at night, neon reflections on the cobblestones.",
]
NEGATIVE = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量"
STAGES = {
    "load": ("WanCoreLoadTextEncoder", "WanCoreLoadDiT", "WanCoreLoadVAE", "UNETLoader", "CLIPLoader", "VAELoader"),
    "text": ("WanCoreEncodePrompts", "CLIPTextEncode"),
    "sampling": ("WanCoreSampler", "KSampler"),
    "decode": ("WanCoreDecode", "VAEDecode"),
    "video": ("CreateVideo", "SaveVideo"),
}


def write_models(root: Path) -> None:
    """The three files, unless already there (writing them takes a few minutes)."""
    from safetensors.torch import save_file
    from tiny_models.dit import random_dit_state
    from tiny_models.umt5 import write_real_size_umt5
    from tiny_models.vae import random_vae_state
    from wan_core.dit.config import WanDiTConfig
    from wan_core.vae import WanVAEConfig

    for sub in ("text_encoders", "diffusion_models", "vae"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if not (root / "text_encoders" / TEXT_ENCODER).exists():
        print("writing umt5-xxl (6.7 GB, random weights) ...", flush=True)
        write_real_size_umt5(root / "text_encoders" / TEXT_ENCODER)
    if not (root / "diffusion_models" / DIT).exists():
        print("writing the 1.3B DiT (fp16, random weights) ...", flush=True)
        sd = random_dit_state(WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30), seed=0)
        save_file({k: v.half() for k, v in sd.items()}, str(root / "diffusion_models" / DIT))
        del sd
    if not (root / "vae" / VAE).exists():
        save_file(random_vae_state(WanVAEConfig("2.1", z_dim=16, dim=96, dec_dim=96), seed=0), str(root / "vae" / VAE))


def ours_workflow() -> Workflow:
    return Workflow.load(ROOT / "workflows" / "api" / "wan2.1_t2v_1.3B_api.json")


def native_workflow() -> Workflow:
    """ComfyUI's own Wan2.1 text-to-video graph (as its template), ending in the same video nodes."""
    ours = ours_workflow().prompt
    video = {k: v for k, v in ours.items() if v["class_type"] in ("CreateVideo", "SaveVideo")}
    create, save = (next(k for k, v in video.items() if v["class_type"] == c) for c in ("CreateVideo", "SaveVideo"))
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": DIT, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "wan", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["2", 0]}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 832, "height": 480, "length": 81,
                                                                 "batch_size": 1}},
        "7": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["7", 0], "seed": 0, "steps": 30, "cfg": 6.0,
                                                   "sampler_name": "uni_pc", "scheduler": "simple",
                                                   "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "CreateVideo", "inputs": dict(ours[create]["inputs"], images=["9", 0])},
        "11": {"class_type": "SaveVideo", "inputs": dict(ours[save]["inputs"], video=["10", 0],
                                                         filename_prefix="native/wan2.1_t2v_1.3B")},
    }
    return Workflow(Path("native_wan2.1_t2v_1.3B_api.json"), prompt)


async def run_job(server: ComfyServer, prompt: dict, timeout: float) -> dict:
    """Queue ``prompt`` and follow it on the websocket: wall time and seconds per node type."""
    import aiohttp

    stages = {k: 0.0 for k in STAGES}
    stages["other"] = 0.0
    types = {nid: n["class_type"] for nid, n in prompt.items()}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.ws_url, heartbeat=10) as ws:
            status, body = server.queue(prompt)
            if status != 200:
                raise SystemExit(f"the server refused the workflow: {json.dumps(body)[:2000]}")
            pid = body["prompt_id"]
            t0 = time.perf_counter()
            current, since = None, t0
            deadline = t0 + timeout
            while True:
                msg = await ws.receive(timeout=max(1.0, deadline - time.perf_counter()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                d = data.get("data", {})
                if d.get("prompt_id") != pid:
                    continue
                now = time.perf_counter()
                if data["type"] in ("executing", "execution_success", "execution_error", "execution_interrupted"):
                    if current is not None:
                        kind = next((s for s, t in STAGES.items() if types[current] in t), "other")
                        stages[kind] += now - since
                    current, since = (d.get("node") if data["type"] == "executing" else None), now
                if data["type"] in ("execution_error", "execution_interrupted"):
                    raise SystemExit(f"the job failed: {json.dumps(d)[:3000]}")
                if data["type"] == "execution_success" or (data["type"] == "executing" and d.get("node") is None):
                    break
            wall = time.perf_counter() - t0
    for _ in range(100):  # the history entry is written just after the end-of-prompt event
        entry = server.history(pid)
        if finished(entry):
            break
        await asyncio.sleep(0.1)
    files = server.output_files(entry, ".mp4")
    return {"wall": wall, "stages": stages, "files": [str(f) for f in files], "entry": entry,
            "peak_rss": status_bytes("VmHWM", server.proc.pid)}


def run_implementation(name: str, workflow: Workflow, args, models: Path, work: Path) -> list:
    server = ComfyServer(args.comfyui, models, work / name, python=sys.executable, cpu=args.device == "cpu").start()
    try:
        results = []
        for i, steps in enumerate(args.steps):
            settings = {"prompt": PROMPTS[i % len(PROMPTS)], "seed": 100 + i, "steps": steps,
                        "guidance": args.guidance, "shift": args.shift, "frames": args.frames,
                        "size": f"{args.width}x{args.height}"}
            if workflow.has("negative"):
                settings["negative"] = NEGATIVE
            if workflow.has("scheduler"):
                settings["scheduler"] = "unipc"
            prompt = workflow.with_settings(settings).prompt
            r = asyncio.run(run_job(server, prompt, args.timeout))
            r.update(steps=steps)
            print(f"  {name}, {steps} steps: {r['wall']:.1f} s, " + ", ".join(
                f"{k} {v:.1f} s" for k, v in r["stages"].items()) + f"; server peak RSS {r['peak_rss'] / 2**30:.2f} GiB",
                flush=True)
            results.append(r)
        return results
    finally:
        server.stop()


def report(res: dict, args) -> None:
    ours, native = res["ours"], res["native"]
    gb = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    print(f"\nWhole text-to-video job through a headless ComfyUI 0.30 ("
          + (f"--cpu, {torch.get_num_threads()} threads here" if args.device == "cpu" else "GPU") + "): "
          "Wan2.1 1.3B fp16 file, umt5-xxl fp8 scaled file, Wan2.1 VAE, all real size with random weights; "
          f"{args.frames} frames {args.width}x{args.height}, guidance {args.guidance} (two DiT passes per step), "
          "UniPC; one fresh server per implementation, the first job includes loading the models")
    rows = []
    for o, n in zip(ours, native):
        rows.append([f"{o['steps']} steps" + (" (first job)" if o is ours[0] else ""),
                     f"{o['wall']:.1f} s", f"{n['wall']:.1f} s", f"{o['wall'] / n['wall']:.2f}x",
                     *(f"{o['stages'][k] / max(n['stages'][k], 1e-9):.2f}x" for k in ("load", "text", "sampling", "decode")),
                     gb(o["peak_rss"]), gb(n["peak_rss"]), f"{o['peak_rss'] / n['peak_rss']:.2f}x"])
    print(table(rows, ["job", "ours", "native", "time vs native", "load", "text", "sampling", "decode",
                       "ours peak RSS", "native peak RSS", "peak vs native"]))
    print("\nSeconds per stage (ours / native)")
    rows = [[f"{o['steps']} steps", *(f"{o['stages'][k]:.1f} / {n['stages'][k]:.1f}" for k in
                                      ("load", "text", "sampling", "decode", "video", "other"))]
            for o, n in zip(ours, native)]
    print(table(rows, ["job", "load", "text", "sampling", "decode", "video", "other"]))
    # How the ratio moves with the step count: the last (warm) job's fixed part plus its per-step
    # sampling time, for each implementation; the measured step counts are rows of the table above.
    o, n = ours[-1], native[-1]
    per_o, per_n = o["stages"]["sampling"] / o["steps"], n["stages"]["sampling"] / n["steps"]
    fix_o, fix_n = o["wall"] - o["stages"]["sampling"], n["wall"] - n["stages"]["sampling"]
    rows = [[s, f"{fix_o + s * per_o:.0f} s", f"{fix_n + s * per_n:.0f} s", f"{(fix_o + s * per_o) / (fix_n + s * per_n):.2f}x"]
            for s in sorted(set(args.steps) | {10, 20, 30, 50})]
    print(f"\nTime ratio against the step count (models loaded; from the {o['steps']}-step job: fixed part "
          f"ours {fix_o:.1f} s / native {fix_n:.1f} s, sampling per step ours {per_o:.1f} s / native {per_n:.1f} s)")
    print(table(rows, ["steps", "ours", "native", "time vs native"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4], help="one job per value, in this order")
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--shift", type=float, default=5.0)
    ap.add_argument("--models", default=None, help="folder for the model files (kept; default: a temp dir)")
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (default $COMFYUI_PATH)")
    ap.add_argument("--only", choices=["ours", "native"], help="run one implementation")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"],
                    help="cpu starts the servers with --cpu; cuda lets ComfyUI use the GPU")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    if not args.comfyui:
        raise SystemExit("no ComfyUI: pass --comfyui or source ~/.cache/wan-video-pack/env.sh (sets COMFYUI_PATH)")
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(args.models) if args.models else Path(tmp) / "models"
        write_models(models)
        res = {}
        for name, wf in (("ours", ours_workflow()), ("native", native_workflow())):
            if args.only in (None, name):
                print(f"{name}: starting a ComfyUI", flush=True)
                res[name] = run_implementation(name, wf, args, models, Path(tmp))
        if len(res) == 2:
            report(res, args)


if __name__ == "__main__":
    main()
