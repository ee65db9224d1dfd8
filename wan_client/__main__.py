"""Run the pack's API workflows on ComfyUI servers from a script or a terminal.

    python -m wan_client [WORKFLOW_API_JSON] [--server URL ...] [settings] [--prompts FILE] [--out DIR]

Without --server a ComfyUI is started here (COMFYUI_PATH, the project's set-up provides it), with
tiny labelled STAND-IN models when the real checkpoints are missing. Settings are found in the
workflow by node type: --prompt, --negative, --seed, --steps, --guidance, --guidance-low, --shift,
--scheduler, --size WxH or --aspect 16:9 --resolution 480p, --frames, --batch, --lora FILE:STRENGTH
(repeatable; --lora-low for the A14B low-noise expert). --prompts FILE: one prompt per line, or
JSON lines with per-job settings; the jobs are spread over the servers. A manifest (JSON lines)
beside the outputs records every job; a re-run with it skips the finished ones.

Every job's settings are checked against the workflow and the server's published limits before
anything is queued: a batch starts whole or stops naming every bad line. Each video is saved under
a name of its own (the job, the server's file name and the prompt id) through a temporary file.

Exit status: 0 every job done (now or in an earlier run); 1 some jobs failed (a server refused or
could not run them, or their video could not be written; the manifest records them and the same
command retries them); 2 bad settings, a prompts file or folder that cannot be read or written,
nothing queued; 3 no server answers; 130 interrupted (Ctrl-C; our jobs are stopped on their servers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a folder: python wan_client ...
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "wan_client"

from wan_client.api import Server, ServerDown  # noqa: E402
from wan_client.jobs import Job, Manifest, read_prompts  # noqa: E402
from wan_client.progress import Display  # noqa: E402
from wan_client.runner import NoServers, Runner  # noqa: E402
from wan_client.workflow import SettingError, Workflow, limit_problems, settings_from_args  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKFLOW = ROOT / "workflows" / "api" / "wan2.1_t2v_1.3B_api.json"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m wan_client", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", nargs="?", default=str(DEFAULT_WORKFLOW), help="an API-format workflow JSON")
    ap.add_argument("--server", action="append", default=[], metavar="URL",
                    help="a running ComfyUI (repeat for several); without it one is started here")
    ap.add_argument("--prompts", metavar="FILE", help="one prompt per line, or JSON lines with per-job settings")
    ap.add_argument("--out", default=str(ROOT / "output"), help="folder for the videos and the manifest")
    ap.add_argument("--manifest", help="manifest path (default: OUT/manifest.jsonl)")
    ap.add_argument("--models", help="models/ folder for a ComfyUI started here (default: ComfyUI's own)")
    ap.add_argument("--quiet", action="store_true", help="no progress line, even on a terminal")
    g = ap.add_argument_group("settings (found in the workflow by node type)")
    g.add_argument("--prompt")
    g.add_argument("--negative")
    g.add_argument("--seed", type=int)
    g.add_argument("--steps", type=int)
    g.add_argument("--guidance", type=float)
    g.add_argument("--guidance-low", dest="guidance_low", type=float)
    g.add_argument("--shift", type=float)
    g.add_argument("--scheduler")
    g.add_argument("--size", metavar="WxH")
    g.add_argument("--aspect", metavar="16:9")
    g.add_argument("--resolution", metavar="480p")
    g.add_argument("--frames", type=int)
    g.add_argument("--batch", type=int)
    g.add_argument("--lora", action="append", metavar="FILE:STRENGTH")
    g.add_argument("--lora-low", dest="lora_low", action="append", metavar="FILE:STRENGTH")
    return ap.parse_args(argv)


def check_writable(out: Path) -> None:
    """The output folder must be creatable and writable before any job runs on a server."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".wan_client_write_check"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SettingError(f"--out {out}: cannot write there ({err.strerror or err}); choose a writable folder") from None


def local_server(args, workflow: Workflow):
    """A ComfyUI started here, with stand-in models when the workflow's checkpoints are missing."""
    from wan_client.server import ComfyServer
    from wan_client.stand_ins import ensure_models

    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        raise SettingError("no --server given and COMFYUI_PATH is not set: run a ComfyUI and pass --server URL, or "
                           "set COMFYUI_PATH (bash scripts/run_example.sh does both for you)")
    models, stand_in = ensure_models(workflow, Path(args.models) if args.models else Path(comfy) / "models")
    work = Path(args.out) / ".comfyui"
    return ComfyServer(comfy, models, work).start(), stand_in


def main(argv=None, display: Display = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        workflow = Workflow.load(args.workflow)
        base = settings_from_args(args)
        if args.prompts:
            jobs = read_prompts(args.prompts, base, workflow.path.name)
        else:
            jobs = [Job(1, base, workflow.path.name)]
        bad = []
        for job in jobs:  # every job's settings checked before anything is queued
            try:
                workflow.with_settings(job.settings)
            except SettingError as err:
                bad.append(f"{job.where}: {err}" if args.prompts else str(err))
        if bad:
            raise SettingError(bad[0] if len(bad) == 1 and not args.prompts else
                               f"{Path(args.prompts).name}: {len(bad)} problem(s), nothing was queued:\n  "
                               + "\n  ".join(bad))
        check_writable(out)
    except SettingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    manifest = Manifest(args.manifest or out / "manifest.jsonl")
    done = manifest.finished()
    todo = [j for j in jobs if j.key not in done]
    for j in jobs:
        if j.key in done:
            print(f"{j.name} already done: {', '.join(done[j.key]['outputs'])}", file=sys.stderr)
    if not todo:
        print("nothing to do: every job is in the manifest", file=sys.stderr)
        return 0

    local, stand_in = None, False
    if args.server:
        servers = [Server(url) for url in args.server]
    else:
        try:
            local, stand_in = local_server(args, workflow)
        except SettingError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        servers = [local]
        if stand_in:
            todo = [Job(j.index, {**j.settings, **stand_in}, j.workflow, key=j.key, line=j.line) for j in todo]
    try:
        problems = check_limits(workflow, todo, servers)
        if problems:  # the batch starts whole or not at all
            name = Path(args.prompts).name if args.prompts else "the settings"
            print(f"error: {name}: {len(problems)} problem(s), nothing was queued:\n  " + "\n  ".join(problems),
                  file=sys.stderr)
            return 2
        display = display or Display(interactive=False if args.quiet else None, total_jobs=len(jobs))
        runner = Runner(workflow, servers, out, manifest, display, prefix="STAND-IN_" if stand_in else "",
                        name_outputs_by_job=len(jobs) > 1)
        return asyncio.run(_run(runner, todo))
    except NoServers as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    finally:
        if local is not None:
            local.stop()


def check_limits(workflow: Workflow, jobs, servers) -> list:
    """Every job's workflow against the first answering server's published limits (``/object_info``):
    the problems, each naming its line of the prompts file. No server answering: none (the runner
    reports that)."""
    for server in servers:
        try:
            info = server.get("/object_info")
            break
        except ServerDown:
            continue
    else:
        return []
    problems = []
    for job in jobs:
        problems += [f"{job.where}: {p}" for p in limit_problems(workflow.with_settings(job.settings).prompt, info)]
    return problems


async def _run(runner: Runner, jobs) -> int:
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, runner.stop.set)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals on this platform
        pass
    results = await runner.run(jobs)
    if runner.stop.is_set():
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if results and all(r["status"] == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
