"""Tiny stand-in weights, written under the real file names and in the real layouts.

Used by the headless tests and by the README's example run on machines without the real
checkpoints.  Every file is labelled: safetensors metadata ``wan_core_stand_in`` and a README in
the folder.  They produce noise-like videos; they exist to exercise the whole pipeline.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

LABEL = {"wan_core_stand_in": "tiny random weights for testing the pipeline; NOT a real Wan model"}
MARKER = "STAND_IN_MODELS_README.txt"


def _label(path: Path) -> None:
    """Re-save a safetensors file with the stand-in label in its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    save_file(tensors, str(path), metadata={**meta, **LABEL})


def write_stand_ins(root: Path) -> Path:
    """Write every model the example workflows name into ``root`` (models/ layout); idempotent."""
    from gguf import GGMLQuantizationType as T

    from tiny_models.vae import TINY21, TINY22, random_vae_state
    from tiny_models.gguf_files import write_umt5_gguf, write_wan_gguf
    from tiny_models.loras import lora_state
    from tiny_models.dit import TINY_T2V, TINY_TI2V, random_dit_state, write_diffusers_folder
    from tiny_models.umt5 import tiny_umt5_state, train_spiece, write_comfy_umt5

    root = Path(root)
    if (root / MARKER).exists() and (root / "loras").is_dir():  # a cache from before the LoRA stand-ins: rewrite
        return root
    dm, te, vae, diff, loras = (root / d for d in ("diffusion_models", "text_encoders", "vae", "diffusers", "loras"))
    for d in (dm, te, vae, diff, loras):
        d.mkdir(parents=True, exist_ok=True)

    import sentencepiece

    proto = train_spiece()
    vocab = sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size()
    umt5 = tiny_umt5_state(vocab, seed=1)
    write_comfy_umt5(umt5, proto, te / "umt5_xxl_fp8_e4m3fn_scaled.safetensors", fp8=torch.float8_e4m3fn, scaled=True)
    _label(te / "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    write_umt5_gguf(umt5, proto, te / "umt5-xxl-encoder-Q8_0.gguf")

    t2v = random_dit_state(TINY_T2V, seed=10)
    save_file({k: v.half() for k, v in t2v.items()}, str(dm / "wan2.1_t2v_1.3B_fp16.safetensors"), metadata=LABEL)
    ti2v = random_dit_state(TINY_TI2V, seed=11)
    save_file({"model.diffusion_model." + k: v.half() for k, v in ti2v.items()},
              str(dm / "wan2.2_ti2v_5B_fp16.safetensors"), metadata=LABEL)
    fast = diff / "FastWan2.2-TI2V-5B-FullAttn-Diffusers"
    write_diffusers_folder(random_dit_state(TINY_TI2V, seed=12), TINY_TI2V, fast / "transformer", shards=2)
    (fast / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "wan_core_stand_in": LABEL}))
    experts = {}
    for name, seed in (("HighNoise", 13), ("LowNoise", 14)):
        sd = random_dit_state(TINY_T2V, seed=seed)
        types = {k: (T.Q4_K if ".ffn.0." in k else T.Q6_K if ".ffn.2." in k else T.Q8_0)
                 for k, v in sd.items() if v.dim() == 2 and k.startswith("blocks.")}
        write_wan_gguf(sd, dm / f"Wan2.2-T2V-A14B-{name}-Q4_K_M.gguf", types)
        experts[name] = sd
    # LoRAs in the layouts of the real files: lightx2v (diffusion_model. lora_down/up + alpha, diff, diff_b)
    for name, seed in (("high_noise", 17), ("low_noise", 18)):
        save_file(lora_state(TINY_T2V, "lightx2v", rank=64, seed=seed),
                  str(loras / f"wan2.2_t2v_lightx2v_4steps_lora_v1.1_{name}.safetensors"), metadata=LABEL)
    save_file(lora_state(TINY_T2V, "lightx2v", rank=32, seed=19),
              str(loras / "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"), metadata=LABEL)
    save_file(random_vae_state(TINY21, seed=15), str(vae / "wan_2.1_vae.safetensors"), metadata=LABEL)
    save_file(random_vae_state(TINY22, seed=16), str(vae / "wan2.2_vae.safetensors"), metadata=LABEL)
    (root / MARKER).write_text(
        "These are STAND-IN models: tiny random weights written under the real file names and in the real file\n"
        "layouts, so the workflows run end to end on any machine. They generate noise, not real videos.\n"
        "Put the real checkpoints in ComfyUI/models/ for real results (see README.md).\n")
    return root


if __name__ == "__main__":  # python -m tiny_models.stand_ins [FOLDER]
    out = write_stand_ins(Path(sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/wan-video-pack/stand-in-models")))
    print(out)
