"""The models a workflow needs, for a ComfyUI the client starts itself: the real ones when present,
else tiny labelled STAND-IN weights under the real names (the pipeline runs; the video is noise)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Tuple

from .workflow import Workflow

FOLDERS = {"text_encoder_name": "text_encoders", "dit_name": "diffusion_models", "vae_name": "vae",
           "lora_name": "loras"}
ROOT = Path(__file__).resolve().parent.parent


def needed_files(workflow: Workflow):
    """Paths, relative to a models/ folder, of every model file the workflow's loaders name."""
    out = []
    for node in workflow.prompt.values():
        for key, folder in FOLDERS.items():
            name = node["inputs"].get(key)
            if isinstance(name, str):
                out.append(Path(name) if name.startswith("diffusers/") else Path(folder, name))
    return out


def ensure_models(workflow: Workflow, models: Path) -> Tuple[Path, dict]:
    """(models folder to use, settings the stand-ins need or {})."""
    if all((models / f).exists() for f in needed_files(workflow)):
        return models, {}
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tiny_models.stand_ins import write_stand_ins

    cache = Path(os.environ.get("WAN_PACK_CACHE", Path.home() / ".cache" / "wan-video-pack"))
    models = write_stand_ins(cache / "stand-in-models")
    print("=" * 78, file=sys.stderr)
    print("STAND-IN WEIGHTS: the real checkpoints were not found, so tiny random models written under", file=sys.stderr)
    print(f"the real file names in {models} are used, at a small size. The pipeline runs", file=sys.stderr)
    print("end to end (real ComfyUI, real nodes, real mp4) but the video is noise.", file=sys.stderr)
    print("=" * 78, file=sys.stderr)
    name = workflow.path.name
    width = 160 if ("A14B" in name or "2.1" in name) else 192
    return models, {"size": f"{width}x96", "frames": 17}
