"""Start a real ComfyUI headless on 127.0.0.1 with this pack, and talk to it over HTTP.

What the client uses when no ``--server`` is given, and what the tests use to run workflows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from .api import Server, ServerDown

ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "comfyui-wan-core"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torch_sees_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class ComfyServer(Server):
    """A ComfyUI subprocess; ``models`` is a folder in the models/ layout (diffusion_models, vae, ...)."""

    def __init__(self, comfy_path: str, models: Path, workdir: Path, python: str = sys.executable,
                 preview: str = "latent2rgb", cpu: Optional[bool] = None, extra_args: tuple = (),
                 extra_custom_nodes: Optional[dict] = None):
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.comfy_path, self.models, self.workdir = comfy_path, Path(models), Path(workdir)
        self.python, self.preview = python, preview
        self.cpu = cpu  # None: ComfyUI's --cpu only where torch sees no GPU
        self.extra_args = tuple(extra_args)  # more ComfyUI flags (e.g. --reserve-vram)
        self.extra_custom_nodes = dict(extra_custom_nodes or {})  # folder name -> path, linked beside the pack
        self.output = self.workdir / "output"
        self.proc = None

    def start(self, timeout: float = 240) -> "ComfyServer":
        custom = self.workdir / "custom_nodes"
        custom.mkdir(parents=True, exist_ok=True)
        link = custom / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        for name, path in self.extra_custom_nodes.items():
            if not (custom / name).exists():
                (custom / name).symlink_to(Path(path).resolve(), target_is_directory=True)
        cfg = self.workdir / "extra_model_paths.yaml"
        cfg.write_text(
            "wan_core_test:\n"
            f"  base_path: {self.models}\n"
            f"  custom_nodes: {custom}\n"
            "  diffusion_models: diffusion_models\n  text_encoders: text_encoders\n  vae: vae\n  diffusers: diffusers\n"
            "  loras: loras\n  vae_approx: vae_approx\n"
        )
        self.output.mkdir(parents=True, exist_ok=True)
        (self.workdir / "user").mkdir(exist_ok=True)
        cpu = self.cpu if self.cpu is not None else not _torch_sees_gpu()
        cmd = [self.python, "main.py", *(["--cpu"] if cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--output-directory", str(self.output), "--extra-model-paths-config",
               str(cfg), "--user-directory", str(self.workdir / "user"), "--preview-method", self.preview,
               "--temp-directory", str(self.workdir / "temp"),
               "--database-url", f"sqlite:///{self.workdir / 'comfyui.db'}", *self.extra_args]
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
            except ServerDown:
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

    def kill(self):
        """Stop answering at once (a crashed or unplugged server)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI died; log:\n{self.read_log()[-4000:]}")

    def read_log(self) -> str:
        p = self.workdir / "comfyui.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def output_files(self, entry: dict, suffix: str):
        files = []
        for node_out in entry.get("outputs", {}).values():
            for group in node_out.values():
                if isinstance(group, list):
                    for item in group:
                        if isinstance(item, dict) and str(item.get("filename", "")).endswith(suffix):
                            files.append(self.output / item.get("subfolder", "") / item["filename"])
        return files
