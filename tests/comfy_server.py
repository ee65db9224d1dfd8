"""Start a real ComfyUI headless on 127.0.0.1 with this pack and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "comfyui-wan-core"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI subprocess; ``models`` is a folder in the models/ layout (diffusion_models, vae, ...)."""

    def __init__(self, comfy_path: str, models: Path, workdir: Path, python: str = sys.executable,
                 preview: str = "latent2rgb"):
        self.comfy_path, self.models, self.workdir = comfy_path, Path(models), Path(workdir)
        self.python, self.preview = python, preview
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = self.workdir / "output"
        self.client_id = uuid.uuid4().hex
        self.proc = None

    def start(self, timeout: float = 240) -> "ComfyServer":
        custom = self.workdir / "custom_nodes"
        custom.mkdir(parents=True, exist_ok=True)
        link = custom / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        cfg = self.workdir / "extra_model_paths.yaml"
        cfg.write_text(
            "wan_core_test:\n"
            f"  base_path: {self.models}\n"
            f"  custom_nodes: {custom}\n"
            "  diffusion_models: diffusion_models\n  text_encoders: text_encoders\n  vae: vae\n  diffusers: diffusers\n"
            "  loras: loras\n"
        )
        self.output.mkdir(parents=True, exist_ok=True)
        (self.workdir / "user").mkdir(exist_ok=True)
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--output-directory", str(self.output), "--extra-model-paths-config",
               str(cfg), "--user-directory", str(self.workdir / "user"), "--preview-method", self.preview,
               "--temp-directory", str(self.workdir / "temp"),
               "--database-url", f"sqlite:///{self.workdir / 'comfyui.db'}"]
        self.log = open(self.workdir / "comfyui.log", "w")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COMFYUI_DISABLE_UPDATES="1")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_path, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}); log:\n{self.read_log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not start in {timeout}s; log:\n{self.read_log()[-4000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()

    def read_log(self) -> str:
        p = self.workdir / "comfyui.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- HTTP -------------------------------------------------------------------------------------

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, payload=None):
        """(status, json body) of a POST; 4xx answers are returned, not raised."""
        data = json.dumps(payload or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as err:
            body = err.read()
            return err.code, (json.loads(body) if body else {})

    def queue(self, prompt: dict):
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """Poll /history until the prompt finished (success, error or interruption)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error") or entry["status"].get("completed"):
                    return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died; log:\n{self.read_log()[-4000:]}")
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s; log:\n{self.read_log()[-3000:]}")

    def output_files(self, entry: dict, suffix: str):
        files = []
        for node_out in entry.get("outputs", {}).values():
            for group in node_out.values():
                if isinstance(group, list):
                    for item in group:
                        if isinstance(item, dict) and str(item.get("filename", "")).endswith(suffix):
                            files.append(self.output / item.get("subfolder", "") / item["filename"])
        return files
