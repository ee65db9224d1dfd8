"""A running ComfyUI over its HTTP API: queue a prompt, read history and queue, interrupt, fetch files.

Only the standard library; the websocket side (progress events) lives in ``progress.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Optional


class ServerDown(ConnectionError):
    """The server did not answer (refused, reset, timed out)."""


class Server:
    """One ComfyUI at ``url`` (``http://host:port``)."""

    def __init__(self, url: str, client_id: Optional[str] = None, timeout: float = 30):
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout

    def __repr__(self):
        return f"Server({self.url})"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"

    # -- HTTP -------------------------------------------------------------------------------------

    def _open(self, req):
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
            raise ServerDown(f"{self.url} does not answer ({err})") from None

    def get(self, path: str):
        with self._open(self.url + path) as r:
            return json.loads(r.read())

    def get_bytes(self, path: str) -> bytes:
        with self._open(self.url + path) as r:
            return r.read()

    def post(self, path: str, payload=None):
        """(status, json body) of a POST; 4xx answers are returned, not raised."""
        data = json.dumps(payload or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with self._open(req) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, (json.loads(body) if body else {})
            except json.JSONDecodeError:
                return err.code, {"error": body.decode(errors="replace")}

    # -- ComfyUI's API -----------------------------------------------------------------------------

    def queue(self, prompt: dict):
        """POST /prompt: (status, body) -- 200 with ``prompt_id``, or 400 with ``node_errors``."""
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})

    def queue_length(self) -> int:
        q = self.get("/queue")
        return len(q.get("queue_running", [])) + len(q.get("queue_pending", []))

    def history(self, prompt_id: str) -> Optional[dict]:
        return self.get(f"/history/{prompt_id}").get(prompt_id)

    def interrupt(self, prompt_ids=()):
        """Stop the running prompt (if it is one of ``prompt_ids``, or any when none are given) and
        take the pending ones of ``prompt_ids`` off the queue."""
        if prompt_ids:
            self.post("/queue", {"delete": list(prompt_ids)})
        self.post("/interrupt", {"prompt_id": prompt_ids[0]} if len(prompt_ids) == 1 else {})

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """Poll /history until the prompt finished (success, error or interruption)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.history(prompt_id)
            if finished(entry):
                return entry
            self.check_alive()
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s on {self.url}")

    def check_alive(self) -> None:
        """Raise when the server is known to be gone (a local subprocess that exited)."""

    def download(self, item: dict, dest: Path) -> Path:
        """Fetch an output file (``{"filename", "subfolder", "type"}`` from history) to ``dest``,
        atomically: written under a temporary name beside it, then renamed, so a reader never sees
        a part of it and a failed write leaves nothing (raises :class:`WriteError`)."""
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        data = self.get_bytes(f"/view?{query}")
        write_atomic(dest, data)
        return dest


class WriteError(OSError):
    """An output or manifest could not be written (full disk, no permission): the message names the
    file, the reason and the free space of its folder."""


def write_atomic(dest: Path, data: bytes) -> None:
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise WriteError(err.errno, f"cannot write {dest.name} to {dest.parent}: {err.strerror or err} "
                                    f"({free_space(dest.parent)} free there, {len(data) / 2**20:.1f} MiB needed)") from None


def free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown"


def finished(entry: Optional[dict]) -> bool:
    """Whether a /history entry is a finished prompt (succeeded, failed or interrupted); an entry
    can appear while the prompt still runs, with ``completed`` false."""
    status = (entry or {}).get("status") or {}
    return status.get("status_str") in ("success", "error") or status.get("completed") is True


def output_items(entry: dict, suffixes=(".mp4", ".webm", ".webp", ".gif", ".png")):
    """The output files a finished prompt lists (history ``outputs``), by node."""
    items = []
    for node_id, node_out in entry.get("outputs", {}).items():
        for group in node_out.values():
            if isinstance(group, list):
                for item in group:
                    if isinstance(item, dict) and str(item.get("filename", "")).endswith(suffixes):
                        items.append((node_id, item))
    return items


def format_node_errors(body: dict, prompt: Optional[dict] = None) -> str:
    """An HTTP 400 answer of /prompt as readable lines: node, input, message."""
    lines = []
    error = body.get("error")
    if isinstance(error, dict):
        lines.append(f"ComfyUI refused the workflow: {error.get('message', '')} {error.get('details', '')}".rstrip())
    elif error:
        lines.append(f"ComfyUI refused the workflow: {error}")
    for node_id, info in (body.get("node_errors") or {}).items():
        ctype = info.get("class_type") or (prompt or {}).get(node_id, {}).get("class_type", "?")
        for err in info.get("errors", []):
            extra = err.get("extra_info", {}) or {}
            name = extra.get("input_name")
            where = f"node {node_id} ({ctype})" + (f", input '{name}'" if name else "")
            # ComfyUI puts the reason in "message" for range errors ("Value 0 smaller than min of 1"),
            # with only the input's name in "details"; custom validations put it in "details"
            message, details = err.get("message", ""), err.get("details", "")
            if not details or details == name:
                detail = message
            elif not message or message.startswith("Custom validation failed"):
                detail = details
            else:
                detail = f"{message} ({details})"
            lines.append(f"  {where}: {detail}".rstrip())
    return "\n".join(lines) if lines else f"ComfyUI refused the workflow: {json.dumps(body)[:2000]}"
