"""Running jobs on one or several ComfyUIs: each server's own queue is the queue.

A job goes to the live server with the shortest queue that has none of our jobs waiting (so a
server busy with other people's work gets ours last); each server's websocket reports progress and
completion; a server that stops answering (websocket closed, HTTP refused) gets no more jobs and
its unfinished jobs go back to the front of the list for another. Ctrl-C interrupts our running
jobs on their servers and removes our pending ones.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .api import Server, ServerDown, WriteError, finished, format_node_errors, output_items
from .jobs import Job, Manifest, record
from .progress import Display
from .workflow import Workflow


class NoServers(RuntimeError):
    """Every server stopped answering with jobs left."""


@dataclass
class Running:
    job: Job
    prompt: dict
    started: float
    seed: Optional[int]


@dataclass
class ServerState:
    server: Server
    alive: bool = True
    inflight: Dict[str, Running] = field(default_factory=dict)  # prompt_id -> job
    listener: Optional[asyncio.Task] = None


def what_ran(prompt: dict, entry: dict) -> dict:
    """The prompt text the queued workflow held and the video size the server reports having made."""
    used = {}
    for node in prompt.values():
        if node["class_type"] in ("WanCoreEncodePrompts", "CLIPTextEncode"):
            text = node["inputs"].get("positive", node["inputs"].get("text"))
            if isinstance(text, str):
                used["prompt"] = text
                break
    for node_out in entry.get("outputs", {}).values():
        for size in node_out.get("wan_video_size", []):
            used["size"] = f"{size['width']}x{size['height']}"
            used["frames"] = size["frames"]
        cut = [{k: t[k] for k in ("which", "line", "tokens", "kept")}
               for t in node_out.get("wan_prompt_tokens", []) if t.get("truncated")]
        if cut:
            used["truncated"] = cut
    return used


class Runner:
    def __init__(self, workflow: Workflow, servers: List[Server], out_dir: Path, manifest: Manifest,
                 display: Display, prefix: str = "", name_outputs_by_job: bool = True, per_server: int = 1):
        self.workflow, self.out_dir, self.manifest, self.display = workflow, Path(out_dir), manifest, display
        self.states = [ServerState(s) for s in servers]
        self.prefix, self.by_job, self.per_server = prefix, name_outputs_by_job, per_server
        self.events: asyncio.Queue = asyncio.Queue()
        self.results: List[dict] = []
        self.stop = asyncio.Event()

    # -- websocket listeners ---------------------------------------------------------------------------

    async def _listen(self, state: ServerState):
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(state.server.ws_url, heartbeat=10) as ws:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await self.events.put((state, json.loads(msg.data)))
                        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            pass
        await self.events.put((state, {"type": "_down"}))

    # -- the loop -------------------------------------------------------------------------------------

    async def run(self, jobs: List[Job]) -> List[dict]:
        pending = deque(jobs)
        for state in self.states:
            state.listener = asyncio.create_task(self._listen(state))
        await asyncio.sleep(0.2)  # let the websockets connect before the first job's events
        try:
            while (pending or any(s.inflight for s in self.states)) and not self.stop.is_set():
                await self._dispatch(pending)
                if not any(s.alive for s in self.states):
                    raise NoServers(f"no server answers; {len(pending)} jobs were not run")
                try:
                    state, data = await asyncio.wait_for(self.events.get(), timeout=2.0)
                except asyncio.TimeoutError:
                    await self._poll(pending)
                    continue
                await self._handle(state, data, pending)
            if self.stop.is_set():
                await self._interrupt_all()
        finally:
            for state in self.states:
                if state.listener:
                    state.listener.cancel()
        return self.results

    async def _dispatch(self, pending: deque):
        while pending:
            free = [s for s in self.states if s.alive and len(s.inflight) < self.per_server]
            if not free:
                return
            lengths = []
            for s in free:
                try:
                    lengths.append((await asyncio.to_thread(s.server.queue_length), free.index(s), s))
                except ServerDown:
                    await self._lost(s, pending)
            if not lengths:
                return
            _, _, state = min(lengths)
            job = pending.popleft()
            prompt = self.workflow.with_settings(job.settings).prompt
            try:
                status, body = await asyncio.to_thread(state.server.queue, prompt)
            except ServerDown:
                pending.appendleft(job)
                await self._lost(state, pending)
                continue
            if status != 200:  # this job's settings refused by this server: the job fails, the others go on
                message = format_node_errors(body, prompt)
                self.display.failed(job, _host(state), message.replace("\n", " "))
                self._add(record(job, state.server.url, _seed_of(prompt), [], 0.0, "refused", self.manifest.base,
                                 message))
                continue
            seed = _seed_of(prompt)
            state.inflight[body["prompt_id"]] = Running(job, prompt, time.monotonic(), seed)

    async def _handle(self, state: ServerState, data: dict, pending: deque):
        kind, d = data.get("type"), data.get("data", {}) or {}
        if kind == "_down":
            if state.alive and not self.stop.is_set():
                await self._lost(state, pending)
            return
        run = state.inflight.get(d.get("prompt_id"))
        if run is None:
            return
        if kind in ("executing", "progress"):
            node = d.get("node")
            node_type = run.prompt.get(str(node), {}).get("class_type", "") if node is not None else ""
            self.display.event(run.job, _host(state), data, node_type)
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            await self._finish(state, d["prompt_id"])

    async def _poll(self, pending: deque):
        """Catch finishes the websocket missed, and notice servers that stopped answering."""
        for state in self.states:
            if not state.alive:
                continue
            for prompt_id in list(state.inflight):
                try:
                    entry = await asyncio.to_thread(state.server.history, prompt_id)
                except ServerDown:
                    await self._lost(state, pending)
                    break
                if finished(entry):
                    await self._finish(state, prompt_id, entry)

    async def _finish(self, state: ServerState, prompt_id: str, entry: Optional[dict] = None):
        run = state.inflight.pop(prompt_id, None)
        if run is None:
            return
        seconds = time.monotonic() - run.started
        # ComfyUI announces the end on the websocket just before it writes the history entry
        deadline = time.monotonic() + 60
        while not finished(entry) and time.monotonic() < deadline:
            try:
                entry = await asyncio.to_thread(state.server.history, prompt_id)
            except ServerDown:
                entry = None
                break
            if not finished(entry):
                await asyncio.sleep(0.1)
        entry = entry or {}
        status = entry.get("status", {}).get("status_str", "error")
        if status != "success":
            message = _error_text(entry)
            self.display.failed(run.job, _host(state), message)
            rec = record(run.job, state.server.url, run.seed, [], seconds, "error", self.manifest.base, message)
        else:
            files, error = [], ""
            for _, item in output_items(entry):
                try:
                    files.append(await asyncio.to_thread(state.server.download, item,
                                                         self._destination(run.job, prompt_id, item["filename"])))
                except WriteError as err:  # e.g. a full disk: nothing partial is left, the job is not done
                    error = str(err)
                    for f in files:
                        f.unlink(missing_ok=True)
                    break
            if error:
                self.display.failed(run.job, _host(state), error)
                rec = record(run.job, state.server.url, run.seed, [], seconds, "error", self.manifest.base, error,
                             used=what_ran(run.prompt, entry))
            else:
                for t in what_ran(run.prompt, entry).get("truncated", []):
                    self.display.note(f"{run.job.name}: the {t['which']} prompt (line {t['line']}) is {t['tokens']} "
                                      f"tokens; umt5 takes {t['kept']}: the rest was cut")
                self.display.finished(run.job, _host(state), files, seconds)
                rec = record(run.job, state.server.url, run.seed, files, seconds, "success", self.manifest.base,
                             used=what_ran(run.prompt, entry))
        rec["prompt_id"] = prompt_id  # GET /history/<prompt_id> on the server shows what ran
        self._add(rec)

    def _add(self, rec: dict) -> None:
        self.results.append(rec)
        try:
            self.manifest.add(rec)
        except WriteError as err:
            self.display.note(f"error: {err}: {rec['job']} is not recorded in the manifest")

    def _destination(self, job: Job, prompt_id: str, filename: str) -> Path:
        """Where an output goes: a name no other job can take, whichever server made it and whatever
        other client shares the folder (the server's own counter, e.g. ``wan_00001_.mp4``, restarts on
        every server): the job's name in a batch, the server's name, and the prompt's id."""
        name = Path(filename)
        job_part = f"{job.name}_" if self.by_job else ""
        return self.out_dir / f"{self.prefix}{job_part}{name.stem.rstrip('_')}_{prompt_id[:8]}{name.suffix}"

    async def _lost(self, state: ServerState, pending: deque):
        state.alive = False
        moved = list(state.inflight.values())
        state.inflight.clear()
        for run in reversed(moved):
            pending.appendleft(run.job)
        self.display.note(f"{state.server.url} stopped answering; no more jobs go there"
                          + (f"; {', '.join(r.job.name for r in moved)} will run on another server" if moved else ""))

    async def _interrupt_all(self):
        for state in self.states:
            if state.alive and state.inflight:
                ids = list(state.inflight)
                try:
                    await asyncio.to_thread(state.server.interrupt, ids)
                    self.display.note(f"interrupted {len(ids)} job(s) on {state.server.url}")
                except ServerDown:
                    pass
                state.inflight.clear()


def _host(state: ServerState) -> str:
    return state.server.url.split("://", 1)[-1]


def _seed_of(prompt: dict) -> Optional[int]:
    for node in prompt.values():
        if node["class_type"] in ("WanCoreSampler", "KSampler"):
            return node["inputs"].get("seed")
        if node["class_type"] in ("WanCoreNoise", "RandomNoise"):
            return node["inputs"].get("noise_seed")
    return None


def _error_text(entry: dict) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type', '?')} (node {data.get('node_id')}): {data.get('exception_message', '')}".strip()
        if kind == "execution_interrupted":
            return "interrupted"
    return "the prompt failed (see the server's log)"
