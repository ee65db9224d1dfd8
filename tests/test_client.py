"""The headless client (python -m wan_client) against real ComfyUIs on 127.0.0.1 with stand-in models:
a prompts file over two servers, a server stopped mid-batch, re-runs, bad settings, progress, Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from references import comfy_path
from wan_client.__main__ import main
from wan_client.progress import Display
from wan_client.server import ComfyServer

ROOT = Path(__file__).resolve().parent.parent
from tiny_models.stand_ins import write_stand_ins  # noqa: E402

WORKFLOW = str(ROOT / "workflows" / "api" / "wan2.1_t2v_1.3B_api.json")
SMALL = ["--size", "64x48", "--frames", "9", "--steps", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_stand_ins(tmp_path_factory.mktemp("models"))


def start(models, tmp_path_factory, name):
    return ComfyServer(comfy_path(), models, tmp_path_factory.mktemp(name), preview="none", cpu=True).start()


@pytest.fixture(scope="module")
def pair(models, tmp_path_factory):
    servers = [start(models, tmp_path_factory, n) for n in ("server_a", "server_b")]
    yield servers
    for s in servers:
        s.stop()


def executed(server) -> int:
    return len(server.get("/history"))


def write_prompts(path: Path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def manifest_of(out: Path):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_prompts_file_over_two_servers_then_rerun_skips(pair, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.txt", [
        "# three jobs: a plain line and two JSON lines with their own settings",
        "a red fox in the snow",
        json.dumps({"prompt": "一只猫在草地上散步", "seed": 5}),
        json.dumps({"prompt": "waves on a beach", "seed": 9, "steps": 3}),
    ])
    out = tmp_path / "out"
    before = [executed(s) for s in pair]
    args = [WORKFLOW, "--prompts", str(prompts), "--out", str(out), *SMALL]
    for s in pair:
        args += ["--server", s.url]
    assert main(args) == 0
    records = manifest_of(out)
    assert sorted(r["job"] for r in records) == ["job001", "job002", "job003"]
    assert all(r["status"] == "success" and len(r["outputs"]) == 1 for r in records)
    assert all((out / r["outputs"][0]).stat().st_size > 0 and r["outputs"][0].endswith(".mp4") for r in records)
    assert {r["server"] for r in records} == {s.url for s in pair}  # spread over both
    by_job = {r["job"]: r for r in records}
    assert by_job["job002"]["seed"] == 5 and by_job["job002"]["prompt"] == "一只猫在草地上散步"
    assert by_job["job003"]["settings"]["steps"] == 3 and by_job["job001"]["workflow"] == Path(WORKFLOW).name
    # what the servers ran, read back from them (/history) and from the videos, not from our own input
    servers = {s.url: s for s in pair}
    for job, text, seed, steps in (("job002", "一只猫在草地上散步", 5, 2), ("job003", "waves on a beach", 9, 3)):
        rec = by_job[job]
        ran = servers[rec["server"]].get(f"/history/{rec['prompt_id']}")[rec["prompt_id"]]["prompt"][2]
        nodes = {n["class_type"]: n["inputs"] for n in ran.values()}
        assert nodes["WanCoreEncodePrompts"]["positive"] == text
        assert (nodes["WanCoreSampler"]["seed"], nodes["WanCoreSampler"]["steps"]) == (seed, steps)
        assert count_frames(out / rec["outputs"][0]) == 9
    assert sum(executed(s) for s in pair) - sum(before) == 3  # each job queued exactly once

    assert main(args) == 0  # the same command again: everything is in the manifest
    assert sum(executed(s) for s in pair) - sum(before) == 3 and len(manifest_of(out)) == 3

    # a job recorded as failed is not done: the re-run runs it again, and only it (break caught:
    # resume treating every manifest line as done, which skipped the jobs that had failed)
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    failed = json.loads(lines[0])
    failed.update(status="error", error="(marked failed by the test)")
    (out / "manifest.jsonl").write_text("\n".join([json.dumps(failed, ensure_ascii=False)] + lines[1:]) + "\n",
                                        encoding="utf-8")
    assert main(args) == 0
    assert sum(executed(s) for s in pair) - sum(before) == 4
    rerun = manifest_of(out)[-1]
    assert rerun["job"] == failed["job"] and rerun["status"] == "success" and len(manifest_of(out)) == 4


def test_server_stopped_mid_batch(models, tmp_path_factory, tmp_path):
    a, b = start(models, tmp_path_factory, "dies"), start(models, tmp_path_factory, "lives")

    class KillOnFirstStep(Display):
        def event(self, job, server, data, node_type=""):
            super().event(job, server, data, node_type)
            if data.get("type") == "progress" and server == a.url.split("://")[1] and a.proc.poll() is None:
                a.kill()

    try:
        prompts = write_prompts(tmp_path / "p.txt", ["one", "two", "three"])
        out = tmp_path / "out"
        display = KillOnFirstStep(stream=io.StringIO(), interactive=False, total_jobs=3)
        code = main([WORKFLOW, "--prompts", str(prompts), "--out", str(out), "--server", a.url, "--server", b.url,
                     "--size", "64x48", "--frames", "9", "--steps", "6"], display=display)
        assert a.proc.poll() is not None, "the first server was never killed"
        assert code == 0
        records = manifest_of(out)
        assert sorted(r["job"] for r in records) == ["job001", "job002", "job003"]
        assert all(r["status"] == "success" and r["server"] == b.url for r in records)
        assert f"{a.url} stopped answering" in display.stream.getvalue()
    finally:
        a.stop()
        b.stop()


def test_bad_settings_are_readable_and_queue_nothing(pair, tmp_path, capsys):
    server = pair[0]
    before = executed(server)
    # a setting the workflow has no place for: refused before anything is sent
    assert main([WORKFLOW, "--server", server.url, "--out", str(tmp_path), "--lora-low", "x.safetensors:1"]) == 2
    assert "has no low-noise expert" in capsys.readouterr().err
    # a value past the limits the server publishes (/object_info): refused before anything is queued
    assert main([WORKFLOW, "--server", server.url, "--out", str(tmp_path), "--scheduler", "ddim", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "WanCoreSampler.scheduler = 'ddim': not one of the server's 4 choices (unipc" in err
    assert server.get("/queue")["queue_pending"] == [] and executed(server) == before


def test_progress_events_reach_the_display(pair, tmp_path):
    stream = io.StringIO()
    display = Display(stream=stream, interactive=True)
    out = tmp_path / "out"
    assert main([WORKFLOW, "--server", pair[1].url, "--out", str(out), "--seed", "3", *SMALL], display=display) == 0
    text = stream.getvalue()
    assert "job001 (1/1) @ " in text and "WanCoreSampler step 1/2" in text and "WanCoreSampler step 2/2" in text
    assert "ETA" in text and "WanCoreDecode" in text
    record = manifest_of(out)[0]
    assert f"job001 done on {pair[1].url.split('://')[1]}" in text and record["outputs"][0] in text


def test_ctrl_c_interrupts_the_running_job(pair, tmp_path):
    server = pair[0]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "wan_client", WORKFLOW, "--server", server.url, "--out",
                             str(tmp_path), "--size", "160x96", "--frames", "33", "--steps", "200"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not server.get("/queue")["queue_running"]:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted 1 job(s) on" in err
    deadline = time.time() + 60
    while time.time() < deadline and server.get("/queue")["queue_running"]:
        time.sleep(0.2)
    last = list(server.get("/history").values())[-1]
    assert "execution_interrupted" in json.dumps(last["status"]["messages"])


@pytest.mark.parametrize("argv,message", [
    (["--guidance", "nan"], "guidance is nan: it must be a finite number"),
    (["--shift", "inf"], "shift is inf: it must be a finite number"),
    (["--guidance-low", "3"], "has no low-noise expert"),
    (["--out", "/proc/version/videos"], "--out /proc/version/videos: cannot write there"),
])
def test_client_refuses_before_queueing(argv, message, capsys):
    """Checked before any server is contacted (the URL here answers nothing): today's main queued
    NaN guidance (a manifest line with NaN, not JSON), ignored --guidance-low on a one-expert
    workflow, and crashed after the job ran when --out was not writable."""
    workflow = str(Path(__file__).resolve().parents[1] / "workflows" / "api" / "wan2.1_t2v_1.3B_api.json")
    rc = main([workflow, "--server", "http://127.0.0.1:9", "--quiet", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_refusals_print_the_servers_reason():
    """Today's main printed only the field name for range errors (``input 'frames': frames``)."""
    from wan_client.api import format_node_errors

    body = {"error": {"message": "Prompt outputs failed validation"}, "node_errors": {"5": {"class_type": "WanCoreVideoSize", "errors": [
        {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "frames",
         "extra_info": {"input_name": "frames"}},
        {"type": "custom_validation_failed", "message": "Custom validation failed for node",
         "details": "tile_overlap - tile_overlap (512) must be smaller than tile_size (256)",
         "extra_info": {"input_name": "tile_overlap"}},
        {"type": "invalid_input_type", "message": "Failed to convert an input value to a INT value",
         "details": "steps, abc, invalid literal for int()", "extra_info": {"input_name": "steps"}}]}}}
    text = format_node_errors(body)
    assert "input 'frames': Value 0 smaller than min of 1" in text
    assert "input 'tile_overlap': tile_overlap - tile_overlap (512) must be smaller" in text
    assert "input 'steps': Failed to convert an input value to a INT value (steps, abc" in text


def test_manifest_records_what_ran(pair, tmp_path):
    """Without --prompt the workflow's own prompt ran, and 95x65 is snapped by the server: the
    manifest says so (today's main recorded "" and 95x65)."""
    out = tmp_path / "out"
    small = [a for a in SMALL]
    i = small.index("--size")
    small[i + 1] = "95x65"
    assert main([WORKFLOW, "--server", pair[0].url, "--out", str(out), "--seed", "4", "--quiet", *small]) == 0
    record = manifest_of(out)[0]
    held = next(n["inputs"]["positive"] for n in json.loads(Path(WORKFLOW).read_text()).values()
                if n["class_type"] == "WanCoreEncodePrompts")
    assert record["prompt"] == held and held
    assert record["size"] == "96x64" and record["seed"] == 4


# -- files and batches users share (issue 24) -------------------------------------------------------


def embedded_prompt(path: Path) -> str:
    """The workflow prompt SaveVideo embeds in the mp4's metadata."""
    import av

    with av.open(str(path)) as c:
        return c.metadata.get("prompt", "")


def test_two_runs_sharing_an_output_folder_keep_both_videos(pair, tmp_path):
    """Two client runs, each on its own server, the same --out: both servers name their file
    ``..._00001_.mp4`` (their counters collide); an earlier client saved both under that name, the
    second overwriting the first, and both manifest lines pointed at it. Each video now keeps a name
    of its own, holding its own job's prompt, and a re-run of either finds its own video done."""
    out = tmp_path / "shared"
    texts = ["a lighthouse in a storm", "a bowl of ramen, steam rising"]
    for server, text in zip(pair, texts):
        assert main([WORKFLOW, "--server", server.url, "--out", str(out), "--prompt", text, *SMALL]) == 0
    records = manifest_of(out)
    files = [out / r["outputs"][0] for r in records]
    assert len(records) == 2 and files[0] != files[1] and all(f.exists() for f in files)
    for f, text, r in zip(files, texts, records):
        assert text in embedded_prompt(f) and r["prompt_id"][:8] in f.name
    assert not list(out.glob(".*.partial"))
    assert main([WORKFLOW, "--server", pair[0].url, "--out", str(out), "--prompt", texts[0], *SMALL]) == 0
    assert len(manifest_of(out)) == 2  # done already: its own video, not the other run's


def test_a_batch_with_bad_lines_starts_whole_or_not_at_all(pair, tmp_path, capsys):
    """A prompts file whose line 3 has a seed below the server's minimum and line 4 an unknown
    scheduler: nothing is queued, every bad line is named (an earlier client ran job 1, refused job
    2 and never ran job 3, with exit 2, which says "nothing queued")."""
    prompts = write_prompts(tmp_path / "batch.txt", [
        "a red fox in the snow",
        json.dumps({"prompt": "a cat", "seed": 5}),
        json.dumps({"prompt": "a dog", "seed": -5}),
        json.dumps({"prompt": "a bird", "scheduler": "ddim"}),
    ])
    before = sum(executed(s) for s in pair)
    args = [WORKFLOW, "--prompts", str(prompts), "--out", str(tmp_path / "out"), *SMALL]
    assert main(args + ["--server", pair[0].url, "--server", pair[1].url]) == 2
    err = capsys.readouterr().err
    assert "batch.txt: 2 problem(s), nothing was queued" in err
    assert "line 3 (job003): WanCoreSampler.seed = -5: below its minimum 0" in err
    assert "line 4 (job004): WanCoreSampler.scheduler = 'ddim'" in err
    assert sum(executed(s) for s in pair) == before


def test_a_job_the_server_refuses_mid_batch_fails_alone(pair, tmp_path, monkeypatch, capsys):
    """A job a server refuses after the checks (a server that publishes other limits than the one
    asked, stood in for here by skipping the check): recorded as refused with the server's reason,
    the other jobs still run, exit 1; the same command runs only the refused job again."""
    import wan_client.__main__ as cli

    monkeypatch.setattr(cli, "check_limits", lambda *a: [])
    prompts = write_prompts(tmp_path / "batch.txt", [
        "one", json.dumps({"prompt": "two", "seed": -5}), "three"])
    out = tmp_path / "out"
    args = [WORKFLOW, "--prompts", str(prompts), "--out", str(out), "--server", pair[0].url, *SMALL]
    assert main(args) == 1
    by_job = {r["job"]: r for r in manifest_of(out)}
    assert by_job["job002"]["status"] == "refused" and "seed" in by_job["job002"]["error"]
    assert by_job["job001"]["status"] == by_job["job003"]["status"] == "success"
    assert "job002 FAILED" in capsys.readouterr().err


def test_full_disk_fails_the_job_cleanly(pair, tmp_path, capsys):
    """--out on a full disk (a 64 KiB tmpfs filled but for 12 KiB, room for the manifest, not the
    video): one error line naming the folder and its free space, no partial file, the job recorded
    as failed, and a re-run once there is room makes it (an earlier client died with a traceback
    from a write, left a 0-byte mp4 and no manifest line)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a small tmpfs for the full-disk check: {mounted.stderr.decode()}")
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (52 * 1024))
        args = [WORKFLOW, "--server", pair[0].url, "--out", str(disk), "--prompt", "waves", *SMALL]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "No space left on device" in err and f"to {disk}" in err and "free there" in err
        assert "Traceback" not in err
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "manifest.jsonl"]  # nothing partial
        assert [r["status"] for r in manifest_of(disk)] == ["error"]
        filler.unlink()
        assert main(args) == 0
        assert [r["status"] for r in manifest_of(disk)] == ["error", "success"]
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_prompts_file_that_is_not_utf8_names_the_line(pair, tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes("a fox\ncafé crème at dawn\n".encode("latin-1"))
    assert main([WORKFLOW, "--prompts", str(path), "--server", pair[0].url, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "latin1.txt line 2 is not UTF-8 (byte 0xe9 at column 4): save the file as UTF-8" in err
    assert "Traceback" not in err


def test_prompts_past_umt5s_512_tokens_are_reported_per_job(pair, tmp_path, capsys):
    """A long English prompt, a long Chinese one and a long negative: umt5 keeps 512 tokens. Wan
    Encode Prompts says which prompt was cut (in the server's history), the client prints it per job
    and records it in the manifest (an earlier main said it only in the server log, and the warning
    for the negative did not say it was the negative)."""
    english = " ".join(f"a quiet harbor at dawn with boat number {i}" for i in range(120))
    chinese = "一只狐狸在雪地里奔跑，" * 200
    prompts = write_prompts(tmp_path / "long.txt", [
        json.dumps({"prompt": english, "negative": "blurry"}),
        json.dumps({"prompt": "a cat", "negative": chinese}),
    ])
    out = tmp_path / "out"
    assert main([WORKFLOW, "--prompts", str(prompts), "--out", str(out), "--server", pair[0].url, *SMALL]) == 0
    err = capsys.readouterr().err
    by_job = {r["job"]: r for r in manifest_of(out)}
    first, second = by_job["job001"]["truncated"], by_job["job002"]["truncated"]
    assert [t["which"] for t in first] == ["positive"] and first[0]["tokens"] > 512 == first[0]["kept"]
    assert [t["which"] for t in second] == ["negative"] and second[0]["tokens"] > 512
    assert "job001: the positive prompt (line 1) is" in err and "job002: the negative prompt (line 1) is" in err
    assert "negative prompt is" in pair[0].read_log()  # the server's log names the negative too
