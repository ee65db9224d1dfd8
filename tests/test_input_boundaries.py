"""Every widget input of every node of the pack, fed its boundary values through ComfyUI's own
validation (``execution.validate_prompt``) and executor (``execution.PromptExecutor``), in-process, on
tiny stand-in models: min, max, one step past each, NaN, +-inf, a wrong type, an empty string, file
names outside the model folders.

Each case ends one of two ways, and the test says which is allowed:
- refused: exactly one error, on this node, attributed to this input (validation), or an execution
  error on this node whose message names the input, with nothing after it run;
- a correct run: the whole graph finishes (video saved).
Values past a limit, of a wrong type or outside the lists must be refused; non-finite numbers must be
refused (never a run: that was the silent black video); limits themselves may run or be refused.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from pathlib import Path

import pytest

import comfy_inprocess as ci
from tiny_models.stand_ins import write_stand_ins

ROOT = Path(__file__).resolve().parent.parent
NAN, INF = float("nan"), float("inf")
# past-the-limit, wrong-typed and garbage values: must be refused at validation or when the node starts
OUTSIDE = ("../../../../etc/passwd", "/etc/passwd", "", "not_downloaded.safetensors")


class _Server:
    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, *args, **kwargs):
        pass


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    core = ci.host()
    core.NODE_CLASS_MAPPINGS.update(ci.pack().NODE_CLASS_MAPPINGS)  # as ComfyUI loads a custom node folder
    import execution
    import folder_paths

    models = write_stand_ins(tmp_path_factory.mktemp("models"))
    for kind in ("diffusion_models", "text_encoders", "vae", "diffusers", "loras"):
        folder_paths.add_model_folder_path(kind, str(models / kind))
    ci.pack_module("nodes.host").register_model_folders()
    if hasattr(folder_paths, "filename_list_cache"):
        folder_paths.filename_list_cache.clear()
    folder_paths.set_output_directory(str(tmp_path_factory.mktemp("output")))
    executor = execution.PromptExecutor(_Server(), cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    return execution, executor


def run(host, wf):
    """("invalid", node_errors) or ("ran", success, execution_error or None), as ComfyUI's server does."""
    execution, executor = host
    prompt_id = str(uuid.uuid4())
    valid, _, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, wf, None))
    if not valid:
        return "invalid", node_errors
    executor.execute(copy.deepcopy(wf), prompt_id, {}, outputs)
    errors = [m[1] for m in executor.status_messages if m[0] == "execution_error"]
    return "ran", executor.success, errors[0] if errors else None


def api(name):
    wf = json.loads((ROOT / "workflows" / "api" / f"{name}_api.json").read_text())
    wf["5"]["inputs"].update(aspect_ratio="custom", width=64, height=48, frames=5)
    wf["6"]["inputs"]["steps"] = 2
    return wf


def custom_advanced():
    """Wan Noise + Wan A14B Expert Guider + Wan Sampler Select + Wan Sigmas in core SamplerCustomAdvanced."""
    wf = api("wan2.1_t2v_1.3B")
    wf["40"] = {"class_type": "WanCoreNoise", "inputs": {"noise_seed": 3}}
    wf["41"] = {"class_type": "WanCoreExpertGuider", "inputs": {
        "model_high_noise": ["2", 0], "model_low_noise": ["2", 0], "positive": ["4", 0], "negative": ["4", 1],
        "cfg_high_noise": 4.0, "cfg_low_noise": 3.0, "boundary": 0.875}}
    wf["42"] = {"class_type": "WanCoreSamplerSelect", "inputs": {"scheduler": "unipc"}}
    wf["43"] = {"class_type": "WanCoreSigmas", "inputs": {"scheduler": "unipc", "steps": 2, "shift": 5.0,
                                                         "denoise": 1.0}}
    wf["44"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["40", 0], "guider": ["41", 0], "sampler": ["42", 0], "sigmas": ["43", 0], "latent_image": ["5", 0]}}
    del wf["6"]
    wf["7"]["inputs"]["samples"] = ["44", 0]
    return wf


GRAPHS = {"plain": lambda: api("wan2.1_t2v_1.3B"), "lora": lambda: api("wan2.1_t2v_1.3B_lora"),
          "advanced": custom_advanced}


def node_in(wf, class_type):
    return next(k for k, v in wf.items() if v["class_type"] == class_type)


def widget_inputs():
    """(graph, class_type, input, kind, options) for every widget input of every node of the pack."""
    graph_of = {"WanCoreLoraLoader": "lora", "WanCoreNoise": "advanced", "WanCoreExpertGuider": "advanced",
                "WanCoreSamplerSelect": "advanced", "WanCoreSigmas": "advanced"}
    pack = ci.pack()
    cases = []
    for class_type, cls in sorted(pack.NODE_CLASS_MAPPINGS.items()):
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for name, entry in spec.get(group, {}).items():
                kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
                if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                    cases.append((graph_of.get(class_type, "plain"), class_type, name,
                                  "COMBO" if isinstance(kind, list) else kind, opts))
    return cases


def values_for(kind, opts):
    """(value, must_refuse) pairs."""
    if kind == "COMBO":
        return [(v, True) for v in OUTSIDE] + [(5, True)]
    if kind == "STRING":
        return [("", False), (" \n ", False)]
    if kind == "BOOLEAN":
        return [(True, False), (False, False)]
    step = 1 if kind == "INT" else opts.get("step", 0.01)
    out = [(opts["min"], False), (opts["max"], False), (opts["min"] - step, True), (opts["max"] + step, True),
           ("abc", True), ("", True), (INF, True), (-INF, True)]
    if kind == "FLOAT":
        out.append((NAN, True))
    return out


CASES = [(g, c, n, v, refuse) for g, c, n, kind, opts in widget_inputs() for v, refuse in values_for(kind, opts)]


@pytest.mark.parametrize("graph,class_type,name,value,must_refuse", CASES,
                         ids=[f"{c}.{n}={v!r}" for _, c, n, v, _ in CASES])
def test_boundary_value(host, graph, class_type, name, value, must_refuse):
    wf = GRAPHS[graph]()
    node = node_in(wf, class_type)
    if name not in wf[node]["inputs"] and name in ("guidance_low_noise", "boundary", "cfg_mode"):
        wf[node]["inputs"]["model_low_noise"] = ["2", 0]  # the expert inputs act with a low-noise expert
    wf[node]["inputs"][name] = value
    outcome = run(host, wf)
    if outcome[0] == "invalid":
        errors = outcome[1]
        assert list(errors) == [node], errors
        found = [(e["type"], e["extra_info"].get("input_name")) for e in errors[node]["errors"]]
        assert len(found) == 1 and found[0][1] == name, found
        return
    _, success, error = outcome
    if success:
        assert not must_refuse, f"{class_type}.{name} = {value!r} ran instead of being refused"
        return
    assert error is not None and error["node_id"] == node, error
    message = error["exception_message"]
    # about this input and this value ("guidance is nan: ...", "tile_size (64) must be ..."), not a
    # message that merely contains the name somewhere (e.g. "seed" inside another input's text)
    about = rf"(?<![\w.]){re.escape(name)} (is {re.escape(str(value))}\b|\({re.escape(str(value))}\))"
    assert re.search(about, message), f"{class_type}.{name} = {value!r}: the error is not about it: {message}"


@pytest.mark.parametrize("graph,class_type,name", [("plain", "WanCoreSampler", "seed"),
                                                   ("advanced", "WanCoreNoise", "noise_seed")])
def test_largest_seed_with_a_batch(host, graph, class_type, name):
    """Batch item i is seeded seed + i: at the largest seed the widget allows, item 1 wraps to seed 0
    (it overflowed the generator: "Overflow when unpacking long long")."""
    wf = GRAPHS[graph]()
    wf[node_in(wf, class_type)]["inputs"][name] = 2**64 - 1
    wf["5"]["inputs"]["batch_size"] = 2
    assert run(host, wf)[:2] == ("ran", True)
