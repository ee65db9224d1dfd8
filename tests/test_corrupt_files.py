"""Every loader against a matrix of broken files made from its own real-layout stand-in: truncated,
zero bytes, wrong magic, another model's file, NaN values. Whichever step meets the damage first
(the loader, or for NaN values the first use: encoding, sampling, decoding), the run stops with a
ValueError that names the file; nothing reaches a video."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import comfy_inprocess as ci
from tiny_models.stand_ins import write_stand_ins

# loader -> (model folder, its good stand-in, the file of another kind used as "another model's file")
LOADERS = {
    "dit": ("diffusion_models", "wan2.1_t2v_1.3B_fp16.safetensors", "vae/wan_2.1_vae.safetensors"),
    "dit_gguf": ("diffusion_models", "Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf", "text_encoders/umt5-xxl-encoder-Q8_0.gguf"),
    "text_encoder": ("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                     "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors"),
    "text_encoder_gguf": ("text_encoders", "umt5-xxl-encoder-Q8_0.gguf",
                          "diffusion_models/Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf"),
    "vae": ("vae", "wan_2.1_vae.safetensors", "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors"),
    "lora": ("loras", "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors", "vae/wan_2.1_vae.safetensors"),
}
DAMAGE = ("truncated", "zero_bytes", "wrong_magic", "other_model", "nan_values")


def _nan_safetensors(src, dst):
    with safe_open(str(src), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    # the largest floating-point tensor (a weight every forward uses), not an fp8 one
    name = max((k for k, v in sd.items() if v.dtype in (torch.float16, torch.bfloat16, torch.float32)),
               key=lambda k: sd[k].numel())
    sd[name] = torch.full_like(sd[name], float("nan"))
    save_file(sd, str(dst), metadata=meta)


def _nan_gguf(kind, dst):
    from gguf import GGMLQuantizationType as T

    from tiny_models.dit import TINY_T2V, random_dit_state
    from tiny_models.gguf_files import write_umt5_gguf, write_wan_gguf
    from tiny_models.umt5 import tiny_umt5_state, train_spiece

    if kind == "dit_gguf":
        sd = random_dit_state(TINY_T2V, seed=13)
        sd["head.head.weight"] = torch.full_like(sd["head.head.weight"], float("nan"))
        write_wan_gguf(sd, dst, {k: T.Q8_0 for k, v in sd.items() if v.dim() == 2 and k.startswith("blocks.")})
    else:
        import sentencepiece

        proto = train_spiece()
        sd = tiny_umt5_state(sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size(), seed=1)
        name = next(k for k in sd if "shared" in k or "embed" in k)
        sd[name] = torch.full_like(sd[name], float("nan"))
        write_umt5_gguf(sd, proto, dst)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    ci.host()
    import folder_paths

    models = write_stand_ins(tmp_path_factory.mktemp("models"))
    broken = tmp_path_factory.mktemp("broken")
    for kind in ("diffusion_models", "text_encoders", "vae", "loras"):
        (broken / kind).mkdir()
        folder_paths.add_model_folder_path(kind, str(broken / kind))
    names = {}
    for loader, (folder, good, other) in LOADERS.items():
        ext = good.rsplit(".", 1)[1]
        data = (models / folder / good).read_bytes()
        for damage in DAMAGE:
            dst = broken / folder / f"{loader}_{damage}.{ext}"
            if damage == "truncated":
                dst.write_bytes(data[: len(data) // 2])
            elif damage == "zero_bytes":
                dst.write_bytes(b"")
            elif damage == "wrong_magic":
                dst.write_bytes(b"PK\x03\x04" + data[4:])  # a zip's magic where the header should be
            elif damage == "other_model":
                shutil.copy(models / other, dst)
            elif ext == "gguf":
                _nan_gguf(loader, dst)
            else:
                _nan_safetensors(models / folder / good, dst)
            names[(loader, damage)] = dst.name
    if hasattr(folder_paths, "filename_list_cache"):
        folder_paths.filename_list_cache.clear()
    return names


def _tiny_dit():
    from tiny_models.dit import TINY_T2V, random_dit_state

    return random_dit_state(TINY_T2V, seed=10)


def load_and_use(loader, name, tmp_path):
    """The loader node on ``name``, then the node that first uses what it loaded."""
    loaders = ci.pack_module("nodes.loaders")
    sampler = ci.pack_module("nodes.sampler_nodes")
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 512, 4096, generator=g) * 0.5, {}]]

    def sample(model):
        return sampler.WanCoreSampler().run(model, cond, cond, {"samples": torch.zeros(1, 16, 2, 4, 6)}, seed=1,
                                            steps=1, guidance=1.0, shift=5.0, scheduler="unipc", denoise=1.0)

    with torch.inference_mode():
        if loader in ("dit", "dit_gguf"):
            (model,) = loaders.WanCoreLoadDiT().load(name, "default", "sdpa")
            sample(model)
        elif loader.startswith("text_encoder"):
            (te,) = loaders.WanCoreLoadTextEncoder().load(name, "cpu", "fp32")
            ci.pack_module("nodes.prompts").WanCoreEncodePrompts().encode(te, "a cat", "", False)
        elif loader == "vae":
            (vae,) = loaders.WanCoreLoadVAE().load(name, "fp32")
            ci.pack_module("nodes.video").WanCoreDecode().decode(
                vae, {"samples": torch.randn(1, 16, 2, 4, 6, generator=g)}, False, 512, 64)
        else:
            dit = tmp_path / "dit.safetensors"
            save_file({k: v.half() for k, v in _tiny_dit().items()}, str(dit))
            model = loaders.load_wan_model(str(dit), "default", "sdpa")
            (patched,) = ci.pack_module("nodes.lora").WanCoreLoraLoader().load(model, name, 1.0)
            sample(patched)


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("loader", list(LOADERS))
def test_broken_file_is_refused_naming_it(files, loader, damage, tmp_path):
    name = files[(loader, damage)]
    with pytest.raises(ValueError) as info:
        load_and_use(loader, name, tmp_path)
    assert name in str(info.value), f"{loader} / {damage}: the error does not name the file: {info.value}"
