"""Regenerates the front-end screenshots in docs/: the pack's UI workflows opened in ComfyUI's own
front end (headless Chromium via playwright-core, as the front-end test does), on a headless ComfyUI
with the stand-in models. Installs a CJK font first where it can (Debian's fonts-noto-cjk, as root),
so the Chinese negative prompt is drawn as text, not boxes.

    bash scripts/setup_env.sh && source ~/.cache/wan-video-pack/env.sh
    $WAN_PACK_VENV/bin/python scripts/screenshots.py [NAME ...]   (default: the A14B Lightning and 1.3B workflows)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT = ["wan2.2_t2v_A14B_gguf_lightning", "wan2.1_t2v_1.3B"]


def cjk_font() -> bool:
    """A CJK font for Chromium (fc-list knows one), installing Debian's fonts-noto-cjk as root."""
    def present():
        return shutil.which("fc-list") and "CJK" in subprocess.run(["fc-list"], capture_output=True, text=True).stdout

    if present():
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk",
                       shell=True, capture_output=True)
    return bool(present())


def main():
    from tiny_models.stand_ins import write_stand_ins
    from wan_client.server import ComfyServer

    names = sys.argv[1:] or DEFAULT
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    playwright = os.environ.get("PLAYWRIGHT_CORE", "")
    if not (chromium and os.path.exists(playwright) and shutil.which("node")):
        raise SystemExit("needs Chromium, Node.js and playwright-core: run scripts/setup_env.sh as root first")
    if not cjk_font():
        print("warning: no CJK font could be installed; Chinese text will show as boxes", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        models = write_stand_ins(Path(tmp) / "models")
        server = ComfyServer(os.environ["COMFYUI_PATH"], models, Path(tmp) / "comfyui", cpu=True).start()
        try:
            server.post("/settings/Comfy.TutorialCompleted", True)
            files = [str(ROOT / "workflows" / f"{n}.json") for n in names]
            out = subprocess.run(["node", str(ROOT / "tests" / "browser" / "open_workflows.mjs"), server.url, tmp,
                                  *files], capture_output=True, text=True, timeout=600,
                                 env=dict(os.environ, CHROMIUM=chromium, PLAYWRIGHT_CORE=playwright))
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            report = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            server.stop()
        for item in report["results"]:
            unresolved = [n["type"] for n in item["nodes"] if not n["resolved"] and n["type"] != "MarkdownNote"]
            if unresolved or item["dialogs"]:
                raise SystemExit(f"{item['file']}: unresolved nodes {unresolved}, dialogs {item['dialogs']}")
            target = ROOT / "docs" / f"frontend_{item['file']}.png"
            shutil.copyfile(Path(tmp) / f"{item['file']}.png", target)
            print("wrote", target.relative_to(ROOT))


if __name__ == "__main__":
    main()
