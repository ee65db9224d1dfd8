"""Progress of running jobs from ComfyUI's websocket events: node running, step k of n, ETA.

On a terminal one status line is redrawn in place; otherwise (a log, a pipe, CI) progress is quiet
and only each job's final line is printed (what ran where, how long, which files).
"""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Display:
    def __init__(self, stream=None, interactive: Optional[bool] = None, total_jobs: int = 1):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.total = total_jobs
        self.status: Dict[str, str] = {}  # job name -> its current status text
        self._step_start: Dict[str, tuple] = {}
        self._width = 0

    # -- events ------------------------------------------------------------------------------------

    def event(self, job, server: str, data: dict, node_type: str = "") -> None:
        """One websocket message (type + data) for ``job`` on ``server``."""
        kind, d = data.get("type"), data.get("data", {})
        label = f"{job.name} ({job.index}/{self.total}) @ {server}"
        if kind == "executing" and d.get("node") is not None:
            self.status[job.name] = f"{label}: {node_type or 'node ' + str(d['node'])}"
        elif kind == "progress":
            value, total = int(d.get("value", 0)), int(d.get("max", 0))
            now = time.monotonic()
            key = (job.name, d.get("node"))
            start = self._step_start.setdefault(key, (now, value))
            eta = ""
            if value > start[1] and total:
                per_step = (now - start[0]) / (value - start[1])
                eta = f", ETA {_eta(per_step * (total - value))}"
            self.status[job.name] = f"{label}: {node_type or 'node ' + str(d.get('node'))} step {value}/{total}{eta}"
        else:
            return
        self._draw()

    def note(self, text: str) -> None:
        """A line that always shows (a server lost, a job moved)."""
        self._clear()
        print(text, file=self.stream, flush=True)
        self._draw()

    def finished(self, job, server: str, files, seconds: float) -> None:
        self.status.pop(job.name, None)
        names = ", ".join(str(f) for f in files) or "no output files"
        self.note(f"{job.name} done on {server} in {seconds:.1f} s: {names}")

    def failed(self, job, server: str, message: str) -> None:
        self.status.pop(job.name, None)
        self.note(f"{job.name} FAILED on {server}: {message}")

    # -- drawing ----------------------------------------------------------------------------------

    def _clear(self):
        if self.interactive and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def _draw(self):
        if not self.interactive or not self.status:
            return
        line = " | ".join(self.status.values())
        self._clear()
        self.stream.write(line)
        self.stream.flush()
        self._width = len(line)
