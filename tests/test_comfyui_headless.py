"""The pack inside a real ComfyUI started headless: every workflow over HTTP, mp4s checked with
PyAV, validation errors, cancel, a burst of prompts, interop with core nodes, and the UI files
checked against their API twins and the live /object_info."""

import copy
import json
import re
from pathlib import Path

import pytest

from wan_client.server import ComfyServer
from references import comfy_path

ROOT = Path(__file__).resolve().parent.parent
from tiny_models.stand_ins import write_stand_ins  # noqa: E402

WORKFLOWS = ["wan2.1_t2v_1.3B", "wan2.2_ti2v_5B", "fastwan2.2_ti2v_5B_dmd", "wan2.2_t2v_A14B_gguf",
             "wan2.2_t2v_A14B_gguf_lightning", "wan2.1_t2v_1.3B_lora", "wan2.1_t2v_1.3B_long"]
# Tiny stand-in models on a CPU: small sizes, few steps (A14B: 4 steps at shift 12 = 3 high + 1 low).
SMALL = {"wan2.1_t2v_1.3B": (64, 48), "wan2.2_ti2v_5B": (64, 64), "fastwan2.2_ti2v_5B_dmd": (96, 64),
         "wan2.2_t2v_A14B_gguf": (80, 48), "wan2.2_t2v_A14B_gguf_lightning": (80, 48), "wan2.1_t2v_1.3B_lora": (64, 48),
         "wan2.1_t2v_1.3B_long": (64, 48)}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def load_api(name):
    return json.loads((ROOT / "workflows" / "api" / f"{name}_api.json").read_text())


def load_ui(name):
    return json.loads((ROOT / "workflows" / f"{name}.json").read_text())


def shrink(wf, name, frames=9, steps=None, seed=None):
    wf = copy.deepcopy(wf)
    w, h = SMALL[name]
    wf["5"]["inputs"].update(aspect_ratio="custom", width=w, height=h, frames=frames)
    if wf["6"]["inputs"]["scheduler"] != "dmd":
        wf["6"]["inputs"]["steps"] = steps or (4 if "A14B" in name else 3)

    if seed is not None:
        wf["6"]["inputs"]["seed"] = seed
    return wf


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = write_stand_ins(tmp_path_factory.mktemp("models"))
    s = ComfyServer(comfy_path(), models, tmp_path_factory.mktemp("comfyui"), cpu=True).start()
    yield s
    s.stop()


def run_ok(server, wf, timeout=600):
    status, body = server.queue(wf)
    assert status == 200, body
    entry = server.wait(body["prompt_id"], timeout)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.read_log()[-3000:])
    return entry


def run_over_websocket(server, wf, timeout=600):
    """Queue ``wf`` with the server's websocket open: (its JSON events up to the prompt's end, the
    binary messages, i.e. previews)."""
    import asyncio

    import aiohttp

    async def collect():
        events, binary = [], []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={server.client_id}") as ws:
                status, body = server.queue(wf)
                assert status == 200, body
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        binary.append(msg.data)
                        continue
                    data = json.loads(msg.data)
                    events.append(data)
                    d = data.get("data", {})
                    if data["type"] in ("execution_success", "execution_error") and d.get("prompt_id") == body["prompt_id"]:
                        break
        return events, binary

    return asyncio.run(asyncio.wait_for(collect(), timeout))


def decoded_frames(path):
    """The mp4's frames as one uint8 array (the file bytes also hold the prompt as metadata)."""
    import av
    import numpy as np

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def probe_mp4(path):
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = sum(1 for _ in c.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


# -- the pack loads ------------------------------------------------------------------------------


def test_nodes_registered_without_import_errors(server):
    info = server.get("/object_info")
    ours = {k for k in info if k.startswith("WanCore")}
    assert ours == {"WanCoreLoadTextEncoder", "WanCoreLoadDiT", "WanCoreLoadVAE", "WanCoreLoraLoader",
                    "WanCoreEncodePrompts", "WanCoreVideoSize", "WanCoreSampler", "WanCoreDecode",
                    "WanCoreSamplerSelect", "WanCoreSigmas", "WanCoreNoise", "WanCoreExpertGuider"}
    assert info["WanCoreSamplerSelect"]["output"] == ["SAMPLER"] and info["WanCoreSigmas"]["output"] == ["SIGMAS"]
    assert info["WanCoreNoise"]["output"] == ["NOISE"] and info["WanCoreExpertGuider"]["output"] == ["GUIDER"]
    assert info["WanCoreLoadDiT"]["output"] == ["MODEL"] and info["WanCoreSampler"]["input"]["required"]["model"][0] == "MODEL"
    assert "IMPORT FAILED" not in server.read_log()
    dits = info["WanCoreLoadDiT"]["input"]["required"]["dit_name"][0]
    assert "Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf" in dits and "diffusers/FastWan2.2-TI2V-5B-FullAttn-Diffusers" in dits
    for node in ours:  # every input has a tooltip, every node a description
        assert info[node]["description"], node
        for group in ("required", "optional"):
            for name, spec in info[node]["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"


# -- each system end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_runs_and_writes_mp4(server, name):
    """Each shipped workflow, scaled down: an mp4 of the right length, size and rate whose pixels
    are a picture (not black, not constant, varying from frame to frame); for A14B, the log shows
    the switch to the low-noise expert."""
    before = len(server.read_log())
    wf = shrink(load_api(name), name)
    entry = run_ok(server, wf)
    files = server.output_files(entry, ".mp4")
    assert len(files) == 1 and files[0].exists(), entry["outputs"]
    frames, width, height, fps = probe_mp4(files[0])
    w, h = SMALL[name]
    assert (frames, width, height) == (9, w, h)
    assert fps == wf["8"]["inputs"]["fps"]
    pixels = decoded_frames(files[0]).astype(float)
    assert 5 < pixels.mean() < 250 and pixels.std() > 5  # not black, white or flat
    assert pixels.std(axis=(1, 2, 3)).min() > 1 and abs(pixels[0] - pixels[-1]).mean() > 1  # every frame, and moving
    if "A14B" in name:
        assert re.search(r"Wan A14B: \d+ steps on the high-noise expert, [1-9]\d* on the low-noise expert",
                         server.read_log()[before:]), "the low-noise expert did not run"


def test_lora_workflows_patch_the_model(server):
    """The LoRA workflows really patch: Wan LoRA Loader reports its file; the same seed with the LoRA
    at strength 0 gives another video than at the workflow's strength."""
    wf = shrink(load_api("wan2.1_t2v_1.3B_lora"), "wan2.1_t2v_1.3B_lora", seed=5)
    with_lora = run_ok(server, wf)
    log = server.read_log()
    # 2 blocks x (10 linears + their 10 biases + norm3 weight/bias, 3 qk-norms, modulation) + head weight/bias
    assert "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors: 54 weights patched at strength 0.8" in log, log[-2000:]
    assert "skipped 14 tensors for parts this text-to-video model lacks" in log  # k_img, v_img (x3, x2 blocks), img_emb (x2)
    wf["11"]["inputs"]["strength"] = 0.0
    without = run_ok(server, wf)
    a, b = (decoded_frames(server.output_files(e, ".mp4")[0]).astype(int) for e in (with_lora, without))
    assert abs(a - b).mean() > 1.0  # the LoRA changed the video


def test_long_video_in_context_windows(server):
    """The long-video workflow, scaled down: 33 frames (9 latent frames) in 17-frame windows, overlap 8."""
    wf = shrink(load_api("wan2.1_t2v_1.3B_long"), "wan2.1_t2v_1.3B_long", frames=33, seed=3)
    wf["13"]["inputs"].update(context_length=17, context_overlap=8)
    entry = run_ok(server, wf)
    frames, w, h, _ = probe_mp4(server.output_files(entry, ".mp4")[0])
    assert (frames, w, h) == (33, 64, 48)
    # 3 steps x 3 windows (latent frames 0-4, 2-6, 4-8): more DiT passes than steps
    assert "Wan Sampler: 3 steps, 9 DiT passes" in server.read_log()


def test_sampler_custom_advanced_with_our_sampler_sigmas_noise(server):
    """Core SamplerCustomAdvanced built from Wan Noise, core CFGGuider, Wan Sampler Select and Wan
    Sigmas, in place of Wan Sampler: the same video as Wan Sampler with the same settings."""
    base = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=77)
    base["6"]["inputs"].update(steps=4, guidance=5.0, shift=5.0, scheduler="dpm++")
    via_wan_sampler = run_ok(server, base)
    wf = copy.deepcopy(base)
    wf["40"] = {"class_type": "WanCoreNoise", "inputs": {"noise_seed": 77}}
    wf["41"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 5.0}}
    wf["42"] = {"class_type": "CFGGuider", "inputs": {"model": ["41", 0], "positive": ["4", 0], "negative": ["4", 1],
                                                     "cfg": 5.0}}
    wf["43"] = {"class_type": "WanCoreSamplerSelect", "inputs": {"scheduler": "dpm++"}}
    wf["44"] = {"class_type": "WanCoreSigmas", "inputs": {"scheduler": "dpm++", "steps": 4, "shift": 5.0,
                                                         "denoise": 1.0}}
    wf["45"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["40", 0], "guider": ["42", 0],
                                                                  "sampler": ["43", 0], "sigmas": ["44", 0],
                                                                  "latent_image": ["5", 0]}}
    del wf["6"]
    wf["7"]["inputs"]["samples"] = ["45", 0]
    via_custom = run_ok(server, wf)
    a, b = (decoded_frames(server.output_files(e, ".mp4")[0]).astype(int) for e in (via_custom, via_wan_sampler))
    assert a.shape == b.shape and abs(a - b).max() <= 1


def test_progress_events_and_latent_previews_over_websocket(server):
    """One progress event per sampling step on the Sampler node, and binary preview images
    (the server runs with --preview-method latent2rgb)."""
    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", steps=5, seed=99)
    events, binary = run_over_websocket(server, wf)
    previews = len(binary)
    assert events[-1]["type"] == "execution_success"
    steps = [e["data"] for e in events if e["type"] == "progress" and e["data"].get("node") == "6"]
    assert [(p["value"], p["max"]) for p in steps] == [(i, 5) for i in range(1, 6)]
    assert previews >= 5


# -- bad input ------------------------------------------------------------------------------------


def test_bad_values_give_400_with_node_errors(server):
    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B")
    wf["6"]["inputs"]["scheduler"] = "ddim"
    status, body = server.queue(wf)
    assert status == 400 and "6" in body["node_errors"], body
    assert "ddim" in json.dumps(body["node_errors"]["6"])
    wf = shrink(load_api("fastwan2.2_ti2v_5B_dmd"), "fastwan2.2_ti2v_5B_dmd")
    wf["6"]["inputs"]["steps"] = 8  # a rule between inputs: refused when the node starts, once, naming steps
    status, body = server.queue(wf)
    assert status == 200, body
    entry = server.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert "steps is 8: dmd runs 3 steps" in json.dumps(entry["status"]["messages"])
    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B")
    wf["2"]["inputs"]["dit_name"] = "not_downloaded.safetensors"
    status, body = server.queue(wf)
    assert status == 400 and "2" in body["node_errors"], body
    # a wrong type: every error names the input it is about (today's main: "'<' not supported between
    # instances of 'str' and 'int'", attributed to the input 'samples')
    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B")
    wf["6"]["inputs"]["steps"] = "abc"
    status, body = server.queue(wf)
    errors = body["node_errors"]["6"]["errors"]
    assert status == 400 and errors, body
    assert "not supported between" not in json.dumps(body)
    # ComfyUI's own conversion error, once, under the input it is about (a VALIDATE_INPUTS naming several
    # inputs would repeat its message under each of them)
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("invalid_input_type", "steps")], errors
    assert "abc" in errors[0]["details"] and "INT" in errors[0]["message"], errors
    wf["6"]["inputs"]["steps"] = 0
    status, body = server.queue(wf)
    errors = body["node_errors"]["6"]["errors"]
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("value_smaller_than_min", "steps")], errors


def test_runtime_error_is_clear_and_server_survives(server):
    """A Wan2.2 (48-channel) latent given to the Wan2.1 DiT: a clear error, then the server still works."""
    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B")
    wf["3"]["inputs"]["vae_name"] = "wan2.2_vae.safetensors"
    wf["5"]["inputs"].update(width=64, height=64)
    status, body = server.queue(wf)
    assert status == 200
    entry = server.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    messages = json.dumps(entry["status"]["messages"])
    assert "48 channels but the DiT" in messages and "VAE" in messages
    run_ok(server, shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=7))


def test_cancel_then_next_prompt_runs(server):
    """Interrupt as soon as the sampler reports its first step (websocket), then the next prompt runs."""
    import asyncio

    import aiohttp

    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", frames=33, steps=200, seed=11)
    wf["5"]["inputs"].update(width=160, height=96)

    async def interrupt_at_first_step():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={server.client_id}") as ws:
                status, body = server.queue(wf)
                assert status == 200, body
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(msg.data)
                    if data["type"] == "progress" and data["data"].get("node") == "6":
                        assert data["data"]["value"] < data["data"]["max"]
                        server.post("/interrupt")
                        return body["prompt_id"]
                    if data["type"] in ("execution_success", "execution_error"):
                        raise AssertionError(f"the prompt ended before sampling: {data}")

    prompt_id = asyncio.run(asyncio.wait_for(interrupt_at_first_step(), 600))
    entry = server.wait(prompt_id)
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in json.dumps(entry["status"]["messages"])
    run_ok(server, shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=12))


def test_ten_prompts_queued_at_once_all_complete(server):
    ids = []
    for i in range(10):
        status, body = server.queue(shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=1000 + i, steps=2))
        assert status == 200
        ids.append(body["prompt_id"])
    for pid in ids:
        assert server.wait(pid, 900)["status"]["status_str"] == "success"


# -- interoperation with core nodes -------------------------------------------------------------------


def frames_of(server, entry, prefix):
    """The PNG frames a SaveImage with ``prefix`` wrote, as one uint8 array [frames, H, W, 3]."""
    import numpy as np
    from PIL import Image

    files = sorted(f for f in server.output_files(entry, ".png") if f.name.startswith(prefix))
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]).astype(int)


def test_our_latent_decodes_with_core_vae_and_core_latent_with_ours(server):
    """Interoperation, checked on the pictures (lossless PNG frames, not the mp4): our latent decoded
    by core VAEDecode gives Wan Decode's frames (the same VAE file; 8-bit rounding apart), and a
    sampler started from core's EmptyHunyuanLatentVideo makes the same video as from Wan Video Size."""
    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=21)
    wf["20"] = {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}}
    wf["21"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["20", 0]}}
    wf["8"]["inputs"]["images"] = ["21", 0]  # core VAEDecode (one output) into CreateVideo
    wf["22"] = {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": "interop_core"}}
    wf["23"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "interop_ours"}}
    entry = run_ok(server, wf)
    frames, w, h, _ = probe_mp4(server.output_files(entry, ".mp4")[0])
    assert (frames, w, h) == (9, 64, 48)
    core, ours = frames_of(server, entry, "interop_core"), frames_of(server, entry, "interop_ours")
    assert core.shape == ours.shape == (9, 48, 64, 3)
    assert abs(core - ours).max() <= 2 and ours.std() > 5  # the same pictures, not flat ones

    made = []
    for seed_latent in ("ours", "core"):
        wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=22)
        if seed_latent == "core":
            wf["5"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 48, "length": 9,
                                                                           "batch_size": 1}}
        wf["23"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": f"start_{seed_latent}"}}
        entry = run_ok(server, wf)
        frames, w, h, _ = probe_mp4(server.output_files(entry, ".mp4")[0])
        assert (frames, w, h) == (9, 64, 48)
        made.append(frames_of(server, entry, f"start_{seed_latent}"))
    assert (made[0] == made[1]).all() and made[0].std() > 5


def test_batch_of_prompts_one_per_line(server):
    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=31)
    wf["4"]["inputs"].update(positive="a cat on grass\n一只猫在草地上散步", one_prompt_per_line=True)
    wf["5"]["inputs"]["batch_size"] = 2
    entry = run_ok(server, wf)
    # one video per prompt line, in order (Wan Decode's "videos" list, mapped over CreateVideo and SaveVideo)
    files = server.output_files(entry, ".mp4")
    assert len(files) == 2 and [probe_mp4(f)[0] for f in files] == [9, 9], files
    first, second = (decoded_frames(f).astype(float) for f in files)
    assert abs(first - second).mean() > 1  # two prompts, two videos


# -- the workflow files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_file_matches_api_twin_and_object_info(server, name):
    info = server.get("/object_info")
    ui, api = load_ui(name), load_api(name)
    nodes = {n["id"]: n for n in ui["nodes"] if n["type"] not in FRONTEND_ONLY}
    assert {str(i) for i in nodes} == set(api)
    links = {l[0]: l for l in ui["links"]}
    for nid, node in nodes.items():
        ctype = node["type"]
        assert ctype in info, f"{ctype} is not a node type of this server"
        assert api[str(nid)]["class_type"] == ctype
        spec = info[ctype]["input"]
        order = info[ctype].get("input_order", {})
        widget_names = []
        for group in ("required", "optional"):
            for iname in order.get(group, list(spec.get(group, {}))):
                itype = spec[group][iname][0]
                if isinstance(itype, list) or itype in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") or (
                        isinstance(itype, str) and itype.startswith("COMFY_DYNAMICCOMBO")):
                    if iname in api[str(nid)]["inputs"] or group == "required":
                        widget_names.append(iname)
                        if len(spec[group][iname]) > 1 and spec[group][iname][1].get("control_after_generate"):
                            widget_names.append("control_after_generate")
        assert len(node["widgets_values"]) == len(widget_names), (ctype, node["widgets_values"], widget_names)
        api_in = api[str(nid)]["inputs"]
        values = dict(zip(widget_names, node["widgets_values"]))
        for iname, v in values.items():
            if iname != "control_after_generate":
                assert api_in[iname] == v, (ctype, iname)
                options = spec.get("required", {}).get(iname) or spec.get("optional", {}).get(iname)
                if isinstance(options[0], list) and ctype.startswith("WanCore") and "name" not in iname:
                    assert v in options[0], (ctype, iname, v)
        for inp in node["inputs"]:
            if inp["link"] is None:
                continue
            lid, src, sslot, dst, dslot, ltype = links[inp["link"]]
            assert dst == nid and nodes[src]["outputs"][sslot]["type"] == ltype == inp["type"]
            assert api_in[inp["name"]] == [str(src), sslot]
            assert info[nodes[src]["type"]]["output"][sslot] == ltype
        if ctype.startswith("WanCoreLoad") or "lora_name" in api_in:
            models = node["properties"].get("models", [])
            files = [v for k, v in api_in.items() if k.endswith("_name") and isinstance(v, str)
                     and v.endswith((".safetensors", ".gguf"))]  # diffusers/<folder> names are no download
            assert models or not files, f"{ctype} has no properties.models for {files}"
            for m in models:
                assert m["url"].startswith("https://") and m["directory"] in (
                    "diffusion_models", "text_encoders", "vae", "loras")
                assert m["name"] in json.dumps(api_in)
                if "lora_name" in api_in:
                    assert m["directory"] == "loras" and m["name"] == api_in["lora_name"]


def test_front_end_opens_every_workflow(server, tmp_path):
    """Each UI file opened in the real front end (headless Chromium): every node resolves, no
    missing-node or error dialog, no page errors. Screenshots go to $WAN_PACK_SCREENSHOTS if set."""
    import os
    import shutil
    import subprocess

    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    playwright = os.environ.get("PLAYWRIGHT_CORE", "")
    if not (chromium and shutil.which("node") and os.path.exists(playwright)):
        reason = ("the front-end check needs Chromium, Node.js and playwright-core; scripts/setup_env.sh installs "
                  "them when run as root (apt-get install chromium)")
        if os.environ.get("CI"):  # in CI a missing browser is a failed set-up, not a reason to skip
            pytest.fail(reason)
        pytest.skip(reason)
    shots = Path(os.environ.get("WAN_PACK_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert server.post("/settings/Comfy.TutorialCompleted", True)[0] == 200  # no first-run templates dialog
    control = load_ui(WORKFLOWS[0])  # a negative control: the check must flag an unknown node type
    control["nodes"][0]["type"] = "NotARealNode"
    (tmp_path / "control.json").write_text(json.dumps(control))
    files = [str(ROOT / "workflows" / f"{n}.json") for n in WORKFLOWS] + [str(tmp_path / "control.json")]
    out = subprocess.run(["node", str(ROOT / "tests" / "browser" / "open_workflows.mjs"), server.url, str(shots), *files],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, CHROMIUM=chromium, PLAYWRIGHT_CORE=playwright))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["consoleErrors"] == []
    *ours, flagged = report["results"]
    for item, name in zip(ours, WORKFLOWS):
        expected = {str(n["id"]): n["type"] for n in load_ui(name)["nodes"]}
        assert {str(n["id"]): n["type"] for n in item["nodes"]} == expected
        assert all((n["resolved"] or n["type"] in FRONTEND_ONLY) and not n["has_errors"] for n in item["nodes"]), item
        assert item["dialogs"] == [] and item["toasts"] == [], (item["dialogs"], item["toasts"])
        assert (shots / f"{name}.png").stat().st_size > 10_000
        # the workflow's note is rendered (markdown: the heading as text, the file table, the estimates)
        title = load_ui(name)["extra"]["title"]
        assert any(title in note and "What to expect" in note and "24 GB GPU" in note for note in item["notes"]), \
            item["notes"]
    bad = [n for n in flagged["nodes"] if not n["resolved"] and n["type"] not in FRONTEND_ONLY]
    assert [n["type"] for n in bad] == ["NotARealNode"] and bad[0]["has_errors"]


def test_template_browser_lists_only_the_ui_workflows(server):
    """The front end's template browser (``GET /workflow_templates``) lists, for this pack, exactly the
    UI workflows: not their API twins (in ``workflows/api/``), which open as graphs without layout."""
    templates = server.get("/workflow_templates")
    ours = [names for names in templates.values() if "wan2.1_t2v_1.3B" in names]
    assert len(ours) == 1, templates
    assert sorted(ours[0]) == sorted(WORKFLOWS) == sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    api = sorted(p.stem for p in (ROOT / "workflows" / "api").glob("*.json"))
    assert api == sorted(f"{n}_api" for n in WORKFLOWS)


def test_ti2v_start_image_and_its_wrong_use(server):
    """TI2V-5B with a start image (core EmptyImage); the same input on a Wan2.1 graph is a clear error."""
    wf = shrink(load_api("wan2.2_ti2v_5B"), "wan2.2_ti2v_5B", seed=41)
    wf["30"] = {"class_type": "EmptyImage", "inputs": {"width": 200, "height": 120, "batch_size": 1, "color": 0xFF8800}}
    wf["5"]["inputs"]["start_image"] = ["30", 0]
    entry = run_ok(server, wf)
    frames, w, h, _ = probe_mp4(server.output_files(entry, ".mp4")[0])
    assert (frames, w, h) == (9, 64, 64)

    wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=42)
    wf["30"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}}
    wf["5"]["inputs"]["start_image"] = ["30", 0]
    status, body = server.queue(wf)
    entry = server.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert "start image needs the Wan2.2 VAE" in json.dumps(entry["status"]["messages"])


@pytest.mark.parametrize("name,channels,workflow", [("lighttaew2_1", 16, "wan2.1_t2v_1.3B"),
                                                     ("lighttaew2_2", 48, "wan2.2_ti2v_5B")])
def test_taehv_previews(tmp_path_factory, name, channels, workflow):
    """With a TAEHV preview model in models/vae_approx and --preview-method taesd, Wan Sampler's
    previews come from it exactly as core KSampler's do on the same graph (same images), not from
    latent2rgb (latent-size images). The file is random weights in the layout core's TAEHV loads."""
    import io
    import struct

    from PIL import Image
    from safetensors.torch import save_file

    import comfy_inprocess as ci

    ci.host()
    from comfy.taesd.taehv import TAEHV

    models = write_stand_ins(tmp_path_factory.mktemp("models"))
    approx = models / "vae_approx"
    approx.mkdir(exist_ok=True)
    torch_state = TAEHV(latent_channels=channels).state_dict()
    save_file({k: v.contiguous() for k, v in torch_state.items()}, str(approx / f"{name}.safetensors"))
    s = ComfyServer(comfy_path(), models, tmp_path_factory.mktemp("taehv"), preview="taesd", cpu=True).start()

    def previews(wf):
        events, binary = run_over_websocket(s, wf)
        assert events[-1]["type"] == "execution_success", events[-1]
        # PREVIEW_IMAGE messages: event type 1, image type, JPEG bytes
        return [Image.open(io.BytesIO(m[8:])).convert("RGB") for m in binary if struct.unpack(">I", m[:4])[0] == 1]

    try:
        ours = shrink(load_api(workflow), workflow, steps=2, seed=5)
        ours["6"]["inputs"].update(scheduler="euler", guidance=5.0, shift=8.0)
        core = copy.deepcopy(ours)
        core["6"] = {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "positive": ["4", 0], "negative": ["4", 1], "latent_image": ["5", 0], "seed": 5,
            "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
        ours_images, core_images = previews(ours), previews(core)
        assert f"could not find models/vae_approx/{name}" not in s.read_log()
        latent_w = SMALL[workflow][0] // (16 if channels == 48 else 8)
        assert len(ours_images) == len(core_images) == 2
        import numpy as np

        for a, b in zip(ours_images, core_images):
            assert a.size == b.size and a.size[0] > latent_w  # TAEHV frames, not latent2rgb's latent-size image
            assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).mean() < 2.0
    finally:
        s.stop()


def test_sizes_and_numbers_the_server_cannot_take_are_refused_and_it_stays_up(server):
    """Issue rows 1, 1b, 2, 4 over HTTP: each value inside its widget's limits (or NaN, which ComfyUI's
    checks let through); the run stops at the node with a message naming the size or the input, before
    anything large is allocated, and the next prompt runs."""
    base = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=5)
    cases = []
    for batch in (1, 64):
        wf = copy.deepcopy(base)
        wf["5"]["inputs"].update(width=4096, height=4096, frames=1025, batch_size=batch)
        cases.append((wf, "does not fit this machine"))
    for name in ("guidance", "shift", "denoise"):
        wf = copy.deepcopy(base)
        wf["6"]["inputs"][name] = float("nan")  # JSON NaN, as a careless client sends it
        cases.append((wf, f"{name} is nan: it must be a finite number"))
    for wf, expected in cases:
        status, body = server.queue(wf)
        assert status == 200, body
        entry = server.wait(body["prompt_id"], 120)
        assert entry["status"]["status_str"] == "error"
        assert expected in json.dumps(entry["status"]["messages"]), entry["status"]["messages"]
    run_ok(server, base)


# -- model files changed on disk (issue 24 rows 2-3) ---------------------------------------------------


def test_a_model_file_changed_on_disk_is_loaded_again(server, tmp_path):
    """A GGUF DiT overwritten in place (``cp`` over it: same name, truncated and rewritten) while
    the server holds it: the next prompt loads the new file, with a log line, and does not crash
    (an earlier main kept the cached model: same size, it silently ran the new bytes; smaller, the
    process died of a bus error in the dequantizer). A safetensors DiT replaced by another model's
    file: the next prompt reports that file's error by name, and the server runs the next prompt."""
    import shutil

    from gguf import GGMLQuantizationType as T

    from tiny_models.dit import TINY_T2V, random_dit_state
    from tiny_models.gguf_files import write_wan_gguf

    dm = server.models / "diffusion_models"
    first, second = tmp_path / "q8.gguf", tmp_path / "q4.gguf"
    sd = random_dit_state(TINY_T2V, seed=41)
    write_wan_gguf(sd, first, {k: T.Q8_0 for k, v in sd.items() if v.dim() == 2 and k.startswith("blocks.")})
    write_wan_gguf(random_dit_state(TINY_T2V, seed=42), second,
                   {k: T.Q4_0 for k, v in sd.items() if v.dim() == 2 and k.startswith("blocks.")})
    assert second.stat().st_size < first.stat().st_size
    target = dm / "swap_test.gguf"
    shutil.copyfile(first, target)

    def run(seed=51):
        wf = shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=seed)
        wf["2"]["inputs"].update(dit_name="swap_test.gguf", weight_dtype="default")
        wf["23"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": f"swap_{seed}"}}
        return wf

    before = frames_of(server, run_ok(server, run()), "swap_51")
    with open(target, "r+b") as f:  # what cp does to a file it overwrites
        f.truncate(0)
        f.write(second.read_bytes())
    after = frames_of(server, run_ok(server, run()), "swap_51")
    assert abs(after - before).max() > 10  # the new weights made this video
    assert "swap_test.gguf changed on disk since it was loaded; loading the new file" in server.read_log()
    target.unlink()

    # a safetensors DiT replaced by a VAE file: that file's error, by name; then the server goes on
    shutil.copyfile(dm / "wan2.1_t2v_1.3B_fp16.safetensors", dm / "swap_test.safetensors")
    wf = run(seed=52)
    wf["2"]["inputs"]["dit_name"] = "swap_test.safetensors"
    run_ok(server, wf)
    shutil.copyfile(server.models / "vae" / "wan_2.1_vae.safetensors", dm / "swap_test.safetensors")
    status, body = server.queue(wf)
    assert status == 200, body
    entry = server.wait(body["prompt_id"], 300)
    assert entry["status"]["status_str"] == "error"
    error = next(d for kind, d in entry["status"]["messages"] if kind == "execution_error")
    assert error["node_type"] == "WanCoreLoadDiT" and "swap_test.safetensors" in error["exception_message"]
    (dm / "swap_test.safetensors").unlink()
    run_ok(server, shrink(load_api("wan2.1_t2v_1.3B"), "wan2.1_t2v_1.3B", seed=53))
