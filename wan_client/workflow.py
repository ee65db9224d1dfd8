"""Settings of the pack's API workflows by name, found by node type (never by node id).

A setting the workflow does not have is an error naming the setting and what the workflow
offers, before anything is queued.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple


class SettingError(ValueError):
    """A setting this workflow has no place for, or a value it cannot take."""


# setting -> [(node class_type, input name)], the first node type found wins
PLACES: Dict[str, List[Tuple[str, str]]] = {
    "prompt": [("WanCoreEncodePrompts", "positive"), ("CLIPTextEncode", "text")],
    "negative": [("WanCoreEncodePrompts", "negative")],
    "seed": [("WanCoreSampler", "seed"), ("WanCoreNoise", "noise_seed"), ("KSampler", "seed"),
             ("RandomNoise", "noise_seed")],
    "steps": [("WanCoreSampler", "steps"), ("WanCoreSigmas", "steps"), ("KSampler", "steps")],
    "guidance": [("WanCoreSampler", "guidance"), ("CFGGuider", "cfg"), ("KSampler", "cfg")],
    "guidance_low": [("WanCoreSampler", "guidance_low_noise")],
    "shift": [("WanCoreSampler", "shift"), ("WanCoreSigmas", "shift"), ("ModelSamplingSD3", "shift")],
    "scheduler": [("WanCoreSampler", "scheduler")],
    "frames": [("WanCoreVideoSize", "frames"), ("EmptyHunyuanLatentVideo", "length")],
    "width": [("WanCoreVideoSize", "width"), ("EmptyHunyuanLatentVideo", "width")],
    "height": [("WanCoreVideoSize", "height"), ("EmptyHunyuanLatentVideo", "height")],
    "aspect": [("WanCoreVideoSize", "aspect_ratio")],
    "resolution": [("WanCoreVideoSize", "resolution")],
    "batch": [("WanCoreVideoSize", "batch_size")],
}
SETTINGS = tuple(PLACES) + ("size", "lora", "lora_low")


@dataclass
class Workflow:
    """An API workflow file and the prompt dict made from it."""

    path: Path
    prompt: dict

    @classmethod
    def load(cls, path) -> "Workflow":
        path = Path(path)
        try:
            prompt = json.loads(path.read_text())
        except FileNotFoundError:
            moved = path.parent / "api" / path.name
            hint = f" (the API workflows moved to {moved.parent}/: {moved})" if moved.exists() else ""
            raise SettingError(f"workflow {path} not found{hint}") from None
        except json.JSONDecodeError as err:
            raise SettingError(f"{path} is not JSON ({err})") from None
        if not isinstance(prompt, dict) or not all(isinstance(v, dict) and "class_type" in v for v in prompt.values()):
            raise SettingError(f"{path} is not an API-format workflow (export it with 'Save (API)'; the pack's are "
                               "workflows/api/*_api.json)")
        return cls(path, prompt)

    def nodes_of(self, class_type: str) -> List[str]:
        return sorted((nid for nid, n in self.prompt.items() if n["class_type"] == class_type), key=_id_key)

    def place(self, setting: str) -> Tuple[str, str]:
        for class_type, name in PLACES.get(setting, []):
            nodes = self.nodes_of(class_type)
            if nodes:
                return nodes[0], name
        offered = [s for s in SETTINGS if self.has(s)]
        raise SettingError(f"{self.path.name} has no '{setting}' setting (no node of type "
                           f"{' / '.join(t for t, _ in PLACES.get(setting, [])) or '-'}); it offers: "
                           f"{', '.join(offered)}")

    def has(self, setting: str) -> bool:
        if setting == "guidance_low":  # only where the sampler has a low-noise expert connected
            return any("model_low_noise" in self.prompt[n]["inputs"] for n in self.nodes_of("WanCoreSampler"))
        if setting == "size":
            return self.has("width") and self.has("height")
        if setting in ("lora", "lora_low"):
            return bool(self.nodes_of("WanCoreSampler"))
        return any(self.nodes_of(t) for t, _ in PLACES.get(setting, []))

    def with_settings(self, settings: dict) -> "Workflow":
        """A copy with ``settings`` applied (names from :data:`SETTINGS`)."""
        wf = Workflow(self.path, copy.deepcopy(self.prompt))
        for key, value in settings.items():
            if value is None:
                continue
            if key not in SETTINGS:
                raise SettingError(f"unknown setting '{key}'; known: {', '.join(SETTINGS)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingError(f"{key} is {value}: it must be a finite number")
            if key == "guidance_low" and not wf.has("guidance_low"):
                raise SettingError(f"{self.path.name} has no low-noise expert (its Wan Sampler has no model_low_noise): "
                                   "--guidance-low does not apply; use an A14B workflow")
            if key == "size":
                width, height = parse_size(value)
                wf._set("width", width)
                wf._set("height", height)
                if wf.has("aspect"):
                    wf._set("aspect", "custom")
            elif key in ("lora", "lora_low"):
                for spec in ([value] if isinstance(value, str) else value):
                    wf._add_lora(spec, low=key == "lora_low")
            else:
                wf._set(key, value)
        return wf

    def _set(self, setting: str, value):
        node, name = self.place(setting)
        self.prompt[node]["inputs"][name] = value

    def _add_lora(self, spec: str, low: bool):
        name, strength = parse_lora(spec)
        samplers = self.nodes_of("WanCoreSampler")
        if not samplers:
            raise SettingError(f"{self.path.name} has no Wan Sampler to put a LoRA in front of")
        sampler = self.prompt[samplers[0]]["inputs"]
        slot = "model_low_noise" if low else "model"
        if slot not in sampler:
            raise SettingError(f"{self.path.name} has no low-noise expert for --lora-low")
        new_id = str(max((_id_key(k)[0] for k in self.prompt if k.isdigit()), default=0) + 1)
        self.prompt[new_id] = {"class_type": "WanCoreLoraLoader",
                               "inputs": {"model": sampler[slot], "lora_name": name, "strength": strength,
                                          "diffusers_part": "transformer (DiT / high-noise expert)"}}
        sampler[slot] = [new_id, 0]

    def output_nodes(self) -> List[str]:
        return [nid for nid, n in self.prompt.items() if n["class_type"] in ("SaveVideo", "SaveWEBM", "SaveAnimatedWEBP")]


def _id_key(node_id: str):
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def parse_size(value) -> Tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    try:
        w, h = str(value).lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise SettingError(f"size {value!r}: expected WIDTHxHEIGHT, e.g. 832x480") from None


def parse_lora(spec: str) -> Tuple[str, float]:
    name, sep, strength = str(spec).rpartition(":")
    if not sep:
        return str(spec), 1.0
    try:
        return name, float(strength)
    except ValueError:
        raise SettingError(f"lora {spec!r}: expected FILE:STRENGTH, e.g. my_style.safetensors:0.8") from None



def settings_from_args(args) -> dict:
    """The workflow settings given on the command line (absent ones are None)."""
    out = {key: getattr(args, key, None) for key in PLACES if key not in ("width", "height")}
    out["size"] = getattr(args, "size", None)
    out["lora"] = getattr(args, "lora", None) or None
    out["lora_low"] = getattr(args, "lora_low", None) or None
    if out.get("resolution") is not None and out.get("aspect") is None and out["size"] is None:
        raise SettingError("--resolution goes with --aspect (e.g. --aspect 16:9 --resolution 480p)")
    return {k: v for k, v in out.items() if v is not None}


def describe(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("prompt", "negative"))


def limit_problems(prompt: dict, object_info: dict) -> List[str]:
    """What a server would refuse in ``prompt`` by the limits it publishes (``GET /object_info``): a
    node type it lacks, a number past an input's min / max or of the wrong type, a choice not in an
    input's list (a file it does not have). Links and inputs it does not describe are left to it."""
    problems = []
    for node_id, node in sorted(prompt.items(), key=lambda kv: _id_key(kv[0])):
        info = object_info.get(node["class_type"])
        if info is None:
            problems.append(f"node {node_id}: {node['class_type']} is not installed on the server")
            continue
        specs = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
        for name, value in node.get("inputs", {}).items():
            spec = specs.get(name)
            if spec is None or isinstance(value, list):  # unknown to the server, or a link
                continue
            problem = _value_problem(spec, value)
            if problem:
                problems.append(f"{node['class_type']}.{name} = {value!r}: {problem}")
    return problems


def _value_problem(spec, value) -> str:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    choices = kind if isinstance(kind, list) else (opts.get("options") if kind == "COMBO" else None)
    if choices is not None:
        return "" if value in choices else f"not one of the server's {len(choices)} choices" + (
            f" ({', '.join(map(str, choices[:6]))}{', ...' if len(choices) > 6 else ''})" if choices else "")
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and not float(value).is_integer()):
            return f"must be {'an integer' if kind == 'INT' else 'a number'}"
        if "min" in opts and value < opts["min"]:
            return f"below its minimum {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"above its maximum {opts['max']}"
    return ""
