"""Run one of the pack's API workflows headless in a real ComfyUI and copy the mp4 out.

    python scripts/run_workflow.py [workflows/wan2.1_t2v_1.3B_api.json] [--models DIR] [--out output]

Uses the real checkpoints when every file the workflow names is in ``--models`` (default: the
ComfyUI's models/ folder). Otherwise it writes tiny STAND-IN weights under the real file names,
says so loudly, and runs at a small size: the pipeline runs end to end but the video is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

from comfy_server import ComfyServer  # noqa: E402
from stand_in_models import write_stand_ins  # noqa: E402

FOLDERS = {"text_encoder_name": "text_encoders", "dit_name": "diffusion_models", "vae_name": "vae"}


def needed_files(wf: dict):
    """Paths, relative to a models/ folder, of every model the workflow's loaders name."""
    out = []
    for node in wf.values():
        for key, folder in FOLDERS.items():
            name = node["inputs"].get(key)
            if isinstance(name, str):
                out.append(Path(name) if name.startswith("diffusers/") else Path(folder, name))
    return out


def has_all(models: Path, files) -> bool:
    return all((models / f).exists() for f in files)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", nargs="?", default=str(ROOT / "workflows" / "wan2.1_t2v_1.3B_api.json"))
    ap.add_argument("--models", help="models/ folder with the real checkpoints (default: ComfyUI's)")
    ap.add_argument("--out", default=str(ROOT / "output"))
    ap.add_argument("--prompt", help="replace the positive prompt")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()

    comfy = os.environ["COMFYUI_PATH"]
    wf = json.loads(Path(args.workflow).read_text())
    models = Path(args.models) if args.models else Path(comfy) / "models"
    stand_in = not has_all(models, needed_files(wf))
    if stand_in:
        cache = Path(os.environ.get("WAN_PACK_CACHE", Path.home() / ".cache" / "wan-video-pack"))
        models = write_stand_ins(cache / "stand-in-models")
        print("=" * 78)
        print("STAND-IN WEIGHTS: the real checkpoints were not found, so tiny random models written under")
        print(f"the real file names in {models} are used, at a small size. The pipeline runs")
        print("end to end (real ComfyUI, real nodes, real mp4) but the video is noise.")
        print("=" * 78)
        for node in wf.values():
            if node["class_type"] == "WanCoreVideoSize":
                node["inputs"].update(aspect_ratio="custom", width=160 if "A14B" in args.workflow or "2.1" in args.workflow else 192,
                                      height=96, frames=17)
    for node in wf.values():
        if node["class_type"] == "WanCoreEncodePrompts" and args.prompt:
            node["inputs"]["positive"] = args.prompt
        if node["class_type"] == "WanCoreSampler" and args.seed is not None:
            node["inputs"]["seed"] = args.seed

    work = Path(args.out) / ".comfyui"
    server = ComfyServer(comfy, models, work).start()
    try:
        t0 = time.time()
        status, body = server.queue(wf)
        if status != 200:
            raise SystemExit(f"ComfyUI refused the workflow: {json.dumps(body, indent=1)}")
        entry = server.wait(body["prompt_id"], timeout=6 * 3600)
        if entry["status"]["status_str"] != "success":
            raise SystemExit(f"the run failed: {json.dumps(entry['status']['messages'], indent=1)[-3000:]}")
        files = server.output_files(entry, ".mp4")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = out / (("STAND-IN_" if stand_in else "") + f.name)
            shutil.copy(f, target)
            import av

            with av.open(str(target)) as c:
                s = c.streams.video[0]
                n = sum(1 for _ in c.decode(s))
                print(f"wrote {target}: {n} frames, {s.codec_context.width}x{s.codec_context.height}, "
                      f"{float(s.average_rate):g} fps, in {time.time() - t0:.1f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
