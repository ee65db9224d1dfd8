"""Jobs from a prompts file, and the manifest that records them (JSON lines beside the outputs).

A prompts file has one job per line: a plain prompt, or a JSON object of settings (``prompt``,
``seed``, ``steps``, ``size``, ``lora``, ... as on the command line). Blank lines and lines
starting with ``#`` are skipped. A job's key is a hash of the workflow and its settings, so a
re-run with the same manifest skips the jobs already done (and whose output file still exists).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .api import WriteError, free_space
from .workflow import SETTINGS, SettingError


@dataclass
class Job:
    index: int
    settings: dict
    workflow: str
    key: str = ""
    outputs: List[Path] = field(default_factory=list)
    line: Optional[int] = None  # in the prompts file

    @property
    def where(self) -> str:
        return f"line {self.line} ({self.name})" if self.line else self.name

    def __post_init__(self):
        if not self.key:
            blob = json.dumps({"workflow": self.workflow, "settings": self.settings}, sort_keys=True, ensure_ascii=False)
            self.key = hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"job{self.index:03d}"

    @property
    def prompt(self) -> str:
        return str(self.settings.get("prompt", ""))


def read_prompts(path, base: dict, workflow: str) -> List[Job]:
    """Jobs from a prompts file; each line's settings override ``base`` (the command line's)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SettingError(f"prompts file {path} not found") from None
    except OSError as err:
        raise SettingError(f"prompts file {path}: {err.strerror or err}") from None
    jobs = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            line = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise SettingError(f"{path.name} line {number} is not UTF-8 (byte 0x{line[err.start]:02x} at column "
                               f"{err.start + 1}): save the file as UTF-8") from None
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("{"):
            try:
                settings = json.loads(text)
            except json.JSONDecodeError as err:
                raise SettingError(f"{path.name} line {number}: not valid JSON ({err})") from None
            unknown = sorted(set(settings) - set(SETTINGS))
            if unknown:
                raise SettingError(f"{path.name} line {number}: unknown setting(s) {unknown}; known: {', '.join(SETTINGS)}")
        else:
            settings = {"prompt": text}
        jobs.append(Job(len(jobs) + 1, {**base, **settings}, workflow, line=number))
    if not jobs:
        raise SettingError(f"{path.name} holds no prompts")
    return jobs


class Manifest:
    """JSON lines, one per finished job: job, key, prompt, seed, settings, workflow, server, outputs,
    seconds, status."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def base(self) -> Path:
        """Output paths in the manifest are relative to its folder."""
        return self.path.parent

    def records(self) -> List[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: that job is simply not done
        return out

    def finished(self) -> Dict[str, dict]:
        """{job key: record} of successful jobs whose outputs still exist."""
        done = {}
        for rec in self.records():
            if rec.get("status") == "success" and all((self.base / f).exists() for f in rec.get("outputs", [])):
                done[rec["key"]] = rec
        return done

    def add(self, record: dict) -> None:
        """Append one line (raises :class:`~wan_client.api.WriteError` naming the file and the free space)."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError as err:
            raise WriteError(err.errno, f"cannot write the manifest {self.path}: {err.strerror or err} "
                                        f"({free_space(self.path.parent)} free there)") from None


def record(job: Job, server: str, seed: Optional[int], outputs, seconds: float, status: str, base: Path,
           error: str = "", used: Optional[dict] = None) -> dict:
    """A manifest line. ``used``: what ran (the prompt the queued workflow held, the size the server
    made), which wins over the job's own settings where they differ."""
    used = used or {}
    rec = {"job": job.name, "key": job.key, "prompt": used.get("prompt", job.prompt), "seed": seed,
           "settings": {k: v for k, v in job.settings.items() if k != "prompt"}, "workflow": job.workflow,
           "server": server, "outputs": [os.path.relpath(p, base) for p in outputs],
           "seconds": round(seconds, 2), "status": status}
    for key in ("size", "frames", "truncated"):
        if key in used:
            rec[key] = used[key]
    if error:
        rec["error"] = error
    return rec
