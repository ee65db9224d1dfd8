"""Writes the workflows, both from the one description below: for each system a UI-format file
``workflows/NAME.json`` (what the front end opens and lists as a template: ``properties.models`` on
loader nodes as core templates have, and a note saying what it makes, which files go where, the
settings that matter and what to expect) and its API-format twin ``workflows/api/NAME_api.json``
(what headless runs POST to /prompt; in a subfolder so the template browser does not list it).

    bash scripts/setup_env.sh && source ~/.cache/wan-video-pack/env.sh
    $WAN_PACK_VENV/bin/python scripts/build_workflows.py     (the notes' estimates use the host's formulas)
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "workflows"
API = OUT / "api"

# Wan's official default negative prompt, as the Encode Prompts node prefills it.
NEG = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
       "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
       "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")

HF = "https://huggingface.co"
MODELS = {
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (
        f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "text_encoders"),
    "umt5-xxl-encoder-Q8_0.gguf": (f"{HF}/city96/umt5-xxl-encoder-gguf/resolve/main/umt5-xxl-encoder-Q8_0.gguf",
                                   "text_encoders"),
    "wan2.1_t2v_1.3B_fp16.safetensors": (
        f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors",
        "diffusion_models"),
    "wan2.2_ti2v_5B_fp16.safetensors": (
        f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors",
        "diffusion_models"),
    "Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf": (
        f"{HF}/QuantStack/Wan2.2-T2V-A14B-GGUF/resolve/main/HighNoise/Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf",
        "diffusion_models"),
    "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf": (
        f"{HF}/QuantStack/Wan2.2-T2V-A14B-GGUF/resolve/main/LowNoise/Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf",
        "diffusion_models"),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": (
        f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/loras/"
        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", "loras"),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": (
        f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/loras/"
        "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors", "loras"),
    "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors": (
        f"{HF}/Kijai/WanVideo_comfy/resolve/main/Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors", "loras"),
    "wan_2.1_vae.safetensors": (
        f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors", "vae"),
    "wan2.2_vae.safetensors": (
        f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/vae/wan2.2_vae.safetensors", "vae"),
}

# Per node type: inputs in widget/slot order as (name, type, is_widget, optional) and outputs.
SPECS = {
    "WanCoreLoadTextEncoder": ([("text_encoder_name", "COMBO", 1, 0), ("device", "COMBO", 1, 0), ("dtype", "COMBO", 1, 0)],
                               [("text_encoder", "WANCORE_TEXT_ENCODER")]),
    "WanCoreLoadDiT": ([("dit_name", "COMBO", 1, 0), ("weight_dtype", "COMBO", 1, 0), ("attention", "COMBO", 1, 0)],
                       [("model", "MODEL")]),
    "WanCoreLoadVAE": ([("vae_name", "COMBO", 1, 0), ("dtype", "COMBO", 1, 0)], [("vae", "WANCORE_VAE")]),
    "WanCoreEncodePrompts": ([("text_encoder", "WANCORE_TEXT_ENCODER", 0, 0), ("positive", "STRING", 1, 0),
                              ("negative", "STRING", 1, 0), ("one_prompt_per_line", "BOOLEAN", 1, 0)],
                             [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "WanCoreVideoSize": ([("vae", "WANCORE_VAE", 0, 0), ("aspect_ratio", "COMBO", 1, 0), ("resolution", "COMBO", 1, 0),
                          ("width", "INT", 1, 0), ("height", "INT", 1, 0), ("frames", "INT", 1, 0),
                          ("batch_size", "INT", 1, 0), ("start_image", "IMAGE", 0, 1)],
                         [("latent", "LATENT"), ("width", "INT"), ("height", "INT"), ("frames", "INT")]),
    "WanCoreSampler": ([("model", "MODEL", 0, 0), ("positive", "CONDITIONING", 0, 0),
                        ("negative", "CONDITIONING", 0, 0), ("latent", "LATENT", 0, 0), ("seed", "INT", 1, 0),
                        ("steps", "INT", 1, 0), ("guidance", "FLOAT", 1, 0), ("shift", "FLOAT", 1, 0),
                        ("scheduler", "COMBO", 1, 0), ("denoise", "FLOAT", 1, 0), ("model_low_noise", "MODEL", 0, 1),
                        ("guidance_low_noise", "FLOAT", 1, 1), ("boundary", "FLOAT", 1, 1), ("cfg_mode", "COMBO", 1, 1)],
                       [("latent", "LATENT")]),
    "WanCoreDecode": ([("vae", "WANCORE_VAE", 0, 0), ("samples", "LATENT", 0, 0), ("tiled", "BOOLEAN", 1, 0),
                       ("tile_size", "INT", 1, 0), ("tile_overlap", "INT", 1, 0)],
                      [("frames", "IMAGE"), ("videos", "IMAGE", "list")]),
    "LoraLoaderModelOnly": ([("model", "MODEL", 0, 0), ("lora_name", "COMBO", 1, 0), ("strength_model", "FLOAT", 1, 0)],
                            [("MODEL", "MODEL")]),
    "WanCoreLoraLoader": ([("model", "MODEL", 0, 0), ("lora_name", "COMBO", 1, 0), ("strength", "FLOAT", 1, 0),
                           ("diffusers_part", "COMBO", 1, 0)], [("model", "MODEL")]),
    "WanContextWindowsManual": ([("model", "MODEL", 0, 0), ("context_length", "INT", 1, 0),
                                 ("context_overlap", "INT", 1, 0), ("context_schedule", "COMBO", 1, 0),
                                 ("context_stride", "INT", 1, 0), ("closed_loop", "BOOLEAN", 1, 0),
                                 ("fuse_method", "COMBO", 1, 0), ("freenoise", "BOOLEAN", 1, 0),
                                 ("retain_first_frame", "BOOLEAN", 1, 0), ("split_conds_to_windows", "BOOLEAN", 1, 0)],
                                [("MODEL", "MODEL")]),
    "CreateVideo": ([("images", "IMAGE", 0, 0), ("fps", "FLOAT", 1, 0), ("audio", "AUDIO", 0, 1),
                     ("bit_depth", "INT", 1, 1)], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO", 0, 0), ("filename_prefix", "STRING", 1, 0), ("format", "COMBO", 1, 0),
                   ("codec", "COMBO", 1, 0)], [("video", "VIDEO")]),
}
LOADER_MODEL_INPUT = {"WanCoreLoadTextEncoder": "text_encoder_name", "WanCoreLoadDiT": "dit_name",
                      "WanCoreLoadVAE": "vae_name", "LoraLoaderModelOnly": "lora_name", "WanCoreLoraLoader": "lora_name"}
DIFFUSERS_PART = "transformer (DiT / high-noise expert)"
FOLDERS = {"diffusers/FastWan2.2-TI2V-5B-FullAttn-Diffusers": (f"{HF}/FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers",
                                                              "diffusers (the whole folder)")}
NOTE_ID = 20  # the note's node id in the UI files (frontend-only: not in the API twins)


def link(node: int, slot: int = 0):
    return ("link", node, slot)


def lora_node(node_type, model_link, lora_name, strength):
    if node_type == "LoraLoaderModelOnly":
        return (node_type, {"model": model_link, "lora_name": lora_name, "strength_model": strength})
    return (node_type, {"model": model_link, "lora_name": lora_name, "strength": strength,
                        "diffusers_part": DIFFUSERS_PART})


def system(name, title, te, dits, vae, prompt, size, sampler, fps, loras=(), windows=None, model="1.3B", about=(),
           settings=()):
    """The node list of one text-to-video graph (ids are stable: they appear in API files).
    ``loras``: one (node type, file, strength) per DiT, between its loader and the sampler.
    ``model`` (a key of ESTIMATES), ``about`` and ``settings``: the note's text."""
    nodes = {
        1: ("WanCoreLoadTextEncoder", {"text_encoder_name": te, "device": "default", "dtype": "default"}),
        2: ("WanCoreLoadDiT", {"dit_name": dits[0], "weight_dtype": "default", "attention": "auto"}),
        3: ("WanCoreLoadVAE", {"vae_name": vae, "dtype": "default"}),
        4: ("WanCoreEncodePrompts", {"text_encoder": link(1), "positive": prompt, "negative": NEG,
                                     "one_prompt_per_line": False}),
        5: ("WanCoreVideoSize", {"vae": link(3), **size, "batch_size": 1}),
        6: ("WanCoreSampler", {"model": link(2), "positive": link(4, 0), "negative": link(4, 1), "latent": link(5),
                               **sampler}),
        7: ("WanCoreDecode", {"vae": link(3), "samples": link(6), "tiled": False, "tile_size": 512,
                              "tile_overlap": 64}),
        # Wan Decode's "videos" output: one IMAGE per batch item, so a batch makes one video per prompt
        8: ("CreateVideo", {"images": link(7, 1), "fps": fps, "bit_depth": 8}),
        9: ("SaveVideo", {"video": link(8), "filename_prefix": f"wan_core/{name}", "format": "mp4", "codec": "auto"}),
    }
    if len(dits) > 1:
        nodes[10] = ("WanCoreLoadDiT", {"dit_name": dits[1], "weight_dtype": "default", "attention": "auto"})
        nodes[6][1]["model_low_noise"] = link(10)
    for (node_type, lora_name, strength), (loader, lora_id, sampler_input) in zip(
            loras, ((2, 11, "model"), (10, 12, "model_low_noise"))):
        nodes[lora_id] = lora_node(node_type, link(loader), lora_name, strength)
        nodes[6][1][sampler_input] = link(lora_id)
    if windows is not None:  # core context windows between the DiT and the sampler (long videos)
        nodes[13] = ("WanContextWindowsManual", {"model": nodes[6][1]["model"], **windows})
        nodes[6][1]["model"] = link(13)
    return {"name": name, "title": title, "nodes": nodes, "model": model, "about": about, "settings": settings,
            "fps": fps, "size": size}


PROMPT = ("A red fox trots through fresh snow in a birch forest at golden hour, its breath visible, the camera "
          "tracking alongside at a low angle, cinematic lighting, shallow depth of field.")

SYSTEMS = [
    system("wan2.1_t2v_1.3B", "Wan2.1 T2V 1.3B (text to video, 480p)", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
           ["wan2.1_t2v_1.3B_fp16.safetensors"], "wan_2.1_vae.safetensors", PROMPT,
           dict(aspect_ratio="16:9", resolution="480p", width=832, height=480, frames=81),
           dict(seed=42, steps=30, guidance=6.0, shift=8.0, scheduler="unipc", denoise=1.0), 16, model="1.3B",
           about="The smallest Wan: quick drafts and GPUs with little memory.",
           settings=["30 UniPC steps, guidance 6, shift 8: the official 480p settings (50 steps: a little sharper).",
                     "Trained at 832x480 and 81 frames; 720p works but was not its training size.",
                     "Negative prompt: prefilled with the official one (empty = the official one)."]),
    system("wan2.2_ti2v_5B", "Wan2.2 TI2V-5B (text to video, 720p)", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
           ["wan2.2_ti2v_5B_fp16.safetensors"], "wan2.2_vae.safetensors", PROMPT,
           dict(aspect_ratio="16:9", resolution="720p", width=1280, height=704, frames=121),
           dict(seed=42, steps=20, guidance=5.0, shift=8.0, scheduler="unipc", denoise=1.0), 24, model="5B",
           about="720p at 24 fps with the Wan2.2 VAE; a start image on Wan Video Size makes it image-to-video.",
           settings=["20 UniPC steps, guidance 5, shift 8 (the official 50 steps are a little sharper).",
                     "Sizes snap to multiples of 32; 1280x704 and 121 frames are its training size.",
                     "Its latents need the Wan2.2 VAE (48 channels); the Wan2.1 VAE is refused."]),
    system("fastwan2.2_ti2v_5B_dmd", "FastWan2.2 TI2V-5B (DMD, 3 steps, no CFG)", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
           ["diffusers/FastWan2.2-TI2V-5B-FullAttn-Diffusers"], "wan2.2_vae.safetensors", PROMPT,
           dict(aspect_ratio="16:9", resolution="720p", width=1280, height=704, frames=121),
           dict(seed=42, steps=3, guidance=1.0, shift=5.0, scheduler="dmd", denoise=1.0), 24, model="5B",
           about="The 5B distilled by FastVideo to 3 steps without guidance: about 13x fewer DiT passes than the 5B.",
           settings=["Scheduler dmd with exactly 3 steps, guidance 1 and denoise 1 (other values are refused).",
                     "Download the whole diffusers folder FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers into "
                     "models/diffusers/ (it lists as diffusers/FastWan2.2-TI2V-5B-FullAttn-Diffusers)."]),
    system("wan2.2_t2v_A14B_gguf", "Wan2.2 T2V A14B, two GGUF experts (Q4_K_M)", "umt5-xxl-encoder-Q8_0.gguf",
           ["Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf", "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf"],
           "wan_2.1_vae.safetensors", PROMPT,
           dict(aspect_ratio="16:9", resolution="480p", width=832, height=480, frames=81),
           dict(seed=42, steps=40, guidance=4.0, shift=12.0, scheduler="unipc", denoise=1.0,
                guidance_low_noise=3.0, boundary=0.875, cfg_mode="batched"), 16, model="A14B",
           about="The best Wan2.2 text-to-video: a high-noise expert for the layout, a low-noise one for the detail.",
           settings=["40 UniPC steps, shift 12, guidance 4 (high-noise) / 3 (low-noise), switch at t = 875: the "
                     "official settings.",
                     "Only the expert in use is on the GPU: the low-noise one loads when sampling reaches it.",
                     "Other quantizations (Q2_K..Q8_0) load the same way: pick both experts of one release."]),
    # The community's Lightning recipe: one distillation LoRA per expert, 4 steps, guidance 1, shift 5.
    system("wan2.2_t2v_A14B_gguf_lightning", "Wan2.2 T2V A14B GGUF + Lightning 4-step LoRAs (guidance 1)",
           "umt5-xxl-encoder-Q8_0.gguf",
           ["Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf", "Wan2.2-T2V-A14B-LowNoise-Q4_K_M.gguf"],
           "wan_2.1_vae.safetensors", PROMPT,
           dict(aspect_ratio="16:9", resolution="480p", width=832, height=480, frames=81),
           dict(seed=42, steps=4, guidance=1.0, shift=5.0, scheduler="euler", denoise=1.0,
                guidance_low_noise=1.0, boundary=0.875, cfg_mode="batched"), 16,
           loras=[("LoraLoaderModelOnly", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", 1.0),
                  ("LoraLoaderModelOnly", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors", 1.0)],
           model="A14B", about="The A14B in 4 steps with the lightx2v Lightning LoRAs: 20x fewer DiT passes.",
           settings=["Guidance 1 on both experts (the LoRAs were distilled without guidance; more burns the "
                     "picture), 4 Euler steps, shift 5.",
                     "Each expert takes its own LoRA: high_noise on the high-noise expert, low_noise on the other."]),
    system("wan2.1_t2v_1.3B_lora", "Wan2.1 T2V 1.3B + CausVid LoRA (8 steps, guidance 1)",
           "umt5_xxl_fp8_e4m3fn_scaled.safetensors", ["wan2.1_t2v_1.3B_fp16.safetensors"], "wan_2.1_vae.safetensors",
           PROMPT, dict(aspect_ratio="16:9", resolution="480p", width=832, height=480, frames=81),
           dict(seed=42, steps=8, guidance=1.0, shift=8.0, scheduler="unipc", denoise=1.0), 16,
           loras=[("WanCoreLoraLoader", "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors", 0.8)],
           model="1.3B", about="The 1.3B with the CausVid distillation LoRA: 8 steps without guidance.",
           settings=["Guidance 1 and 8 steps; LoRA strength 0.8 (1.0 is sharper and stiffer).",
                     "Wan LoRA Loader reports keys the model lacks and refuses LoRAs of other models."]),
    # A video longer than the model's 81 frames: core context windows (81-frame windows, overlap 16).
    system("wan2.1_t2v_1.3B_long", "Wan2.1 T2V 1.3B, 161 frames in 81-frame context windows",
           "umt5_xxl_fp8_e4m3fn_scaled.safetensors", ["wan2.1_t2v_1.3B_fp16.safetensors"], "wan_2.1_vae.safetensors",
           PROMPT, dict(aspect_ratio="16:9", resolution="480p", width=832, height=480, frames=161),
           dict(seed=42, steps=30, guidance=6.0, shift=8.0, scheduler="unipc", denoise=1.0), 16,
           windows=dict(context_length=81, context_overlap=16, context_schedule="standard_static", context_stride=1,
                        closed_loop=False, fuse_method="pyramid", freenoise=True, retain_first_frame=False,
                        split_conds_to_windows=False),
           model="1.3B", about="Longer than the 81 frames the model was trained on: core's context windows "
                               "denoise it in overlapping 81-frame windows.",
           settings=["context_length 81, overlap 16, FreeNoise on: each window sees a clip of the length it knows.",
                     "Memory follows the window, not the whole clip; time grows with the number of windows."]),
]

# model key -> (DiT config, VAE version, bytes per stored weight) for the notes' memory estimates
ESTIMATES = {"1.3B": 0, "5B": 1, "A14B": 2}  # rows of benchmarks/size_limits.py's MODELS


def note_markdown(sysdef) -> str:
    """The note a UI workflow carries: what it makes, which files go where (with links), the settings
    that matter and what to expect on a 24 GB and an 80 GB GPU (estimates until a GPU run measures)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import size_limits

    size, nodes = sysdef["size"], sysdef["nodes"]
    w, h, frames = size["width"], size["height"], size["frames"]
    lines = [f"## {sysdef['title']}", "",
             f"Makes **{frames} frames ({(frames - 1) / sysdef['fps']:.1f} s at {sysdef['fps']} fps) at {w}x{h}** from "
             "the prompt in *Wan Encode Prompts* (English or Chinese; one prompt per line with "
             "one_prompt_per_line makes one video each). " + sysdef["about"], "",
             "**Files** (ComfyUI's `models/` folders; the loaders list them after a refresh):", "",
             "| file | folder |", "|---|---|"]
    seen = []
    for ctype, inputs in nodes.values():
        name = inputs.get(LOADER_MODEL_INPUT.get(ctype, ""), None)
        if name and name not in seen:
            seen.append(name)
            url, folder = MODELS.get(name) or FOLDERS[name]
            lines.append(f"| [{name.split('/')[-1]}]({url}) | `{folder}` |")
    lines += ["", "**Settings that matter**", ""] + [f"- {t}" for t in sysdef["settings"]]
    name, cfg, vae, weight_bytes, _ = size_limits.MODELS[ESTIMATES[sysdef["model"]]]
    est = size_limits.estimate(cfg, vae, weight_bytes, w, h)
    gib = size_limits.GiB
    act, weights, decode = est["activations"](frames), est["weights"], est["decode"]
    cells = []
    for gpu in size_limits.GPUS:
        budget = gpu * gib
        cells.append("fits" if act + weights <= budget else
                     "fits, ComfyUI streams the weights (slower)" if act <= budget else "does not fit: fewer frames")
    expert = " per expert, one at a time" if sysdef["model"] == "A14B" else ""
    lines += ["", "**What to expect** (estimates from ComfyUI's memory formulas, which count a guidance pass; not yet measured "
              "on a GPU; times are not measured yet):", "",
              "| | 24 GB GPU | 80 GB GPU |", "|---|---|---|",
              f"| DiT: weights {weights / gib:.1f} GiB{expert}, activations {act / gib:.1f} GiB | "
              + " | ".join(cells) + " |",
              f"| decode, frame by frame: {decode / gib:.1f} GiB | "
              + " | ".join("fits" if decode <= gpu * gib else "tiles" for gpu in size_limits.GPUS) + " |",
              f"| longest clip at {w}x{h} (weights on the GPU / streamed) | "
              + " | ".join(" / ".join(str(x or "-") for x in est["longest"][gpu]) for gpu in size_limits.GPUS) + " |"]
    return "\n".join(lines)


def api_format(sysdef) -> dict:
    out = {}
    for nid, (ctype, inputs) in sysdef["nodes"].items():
        vals = {k: ([str(v[1]), v[2]] if isinstance(v, tuple) else v) for k, v in inputs.items()}
        out[str(nid)] = {"class_type": ctype, "inputs": vals, "_meta": {"title": ctype}}
    return out


def ui_format(sysdef) -> dict:
    links, ui_nodes = [], []
    for nid, (_ctype, inputs) in sysdef["nodes"].items():
        for name, v in inputs.items():
            if isinstance(v, tuple):
                links.append([len(links) + 1, v[1], v[2], nid, name])
    # (x, y, width, height) per node id: loaders left, prompts and size next, sampler, then output
    cols = {1: (0, 0, 400, 130), 2: (0, 170, 400, 130), 10: (0, 340, 400, 130), 3: (0, 510, 400, 110),
            4: (440, 0, 440, 420), 5: (440, 460, 440, 290), 6: (920, 0, 400, 380), 7: (1360, 0, 360, 170),
            8: (1360, 220, 360, 130), 9: (1760, 0, 420, 170), 11: (440, 800, 440, 110), 12: (440, 950, 440, 110),
            13: (440, 800, 440, 290)}
    for order, (nid, (ctype, inputs)) in enumerate(sorted(sysdef["nodes"].items())):
        spec_in, spec_out = SPECS[ctype]
        ins, widgets = [], []
        for name, typ, is_widget, optional in spec_in:
            if is_widget:
                if name in inputs:
                    widgets.append(inputs[name])
                    if name == "seed":
                        widgets.append("fixed")
                continue
            lid = next((l[0] for l in links if l[3] == nid and l[4] == name), None)
            if lid is not None or not optional:
                ins.append({"name": name, "type": typ, "link": lid})
            elif optional:
                ins.append({"name": name, "type": typ, "link": None, "shape": 7})
        outs = []
        for slot, (oname, otyp, *is_list) in enumerate(spec_out):
            ls = [l[0] for l in links if l[1] == nid and l[2] == slot]
            outs.append({"name": oname, "type": otyp, **({"shape": 6} if is_list else {}), "links": ls,
                         "slot_index": slot})
        props = {"Node name for S&R": ctype}
        if ctype in LOADER_MODEL_INPUT:
            fname = inputs[LOADER_MODEL_INPUT[ctype]]
            if fname in MODELS:
                url, directory = MODELS[fname]
                props["models"] = [{"name": fname, "url": url, "directory": directory}]
        x, y, w, h = cols[nid]
        ui_nodes.append({"id": nid, "type": ctype, "pos": [x, y], "size": [w, h], "flags": {}, "order": order,
                         "mode": 0, "inputs": ins, "outputs": outs, "properties": props, "widgets_values": widgets})
    ui_nodes.append({"id": NOTE_ID, "type": "MarkdownNote", "pos": [-520, 0], "size": [480, 900], "flags": {},
                     "order": len(ui_nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                     "widgets_values": [note_markdown(sysdef)], "color": "#432", "bgcolor": "#653"})
    # slot numbers of link targets, as the front end stores them
    ui_links = []
    for lid, src, sslot, dst, dname in links:
        dtype = next(i["type"] for i in next(n for n in ui_nodes if n["id"] == dst)["inputs"] if i["name"] == dname)
        dslot = [i["name"] for i in next(n for n in ui_nodes if n["id"] == dst)["inputs"]].index(dname)
        ui_links.append([lid, src, sslot, dst, dslot, dtype])
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, sysdef["name"])), "revision": 0,
            "last_node_id": NOTE_ID, "last_link_id": len(ui_links), "nodes": ui_nodes,
            "links": ui_links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.62, "offset": [640, 170]}, "title": sysdef["title"],
                      "wan_core_api_twin": f"api/{sysdef['name']}_api.json"},
            "version": 0.4}


def main():
    API.mkdir(parents=True, exist_ok=True)
    for s in SYSTEMS:
        (OUT / f"{s['name']}.json").write_text(json.dumps(ui_format(s), indent=2, ensure_ascii=False) + "\n")
        (API / f"{s['name']}_api.json").write_text(json.dumps(api_format(s), indent=2, ensure_ascii=False) + "\n")
        print("wrote", s["name"])


if __name__ == "__main__":
    main()
