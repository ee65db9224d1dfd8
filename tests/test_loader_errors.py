"""Bad files chosen in the loader nodes: whichever layer reads them first, the error names the file
and says what to do (a truncated file, a safetensors of another kind, a pickle)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import comfy_inprocess as ci
from tiny_models.dit import TINY_T2V, random_dit_state


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    ci.host()
    import folder_paths

    base = tmp_path_factory.mktemp("bad_files")
    for key in ("diffusion_models", "text_encoders", "vae"):
        (base / key).mkdir()
        folder_paths.add_model_folder_path(key, str(base / key))
    good = base / "good.safetensors"
    save_file(random_dit_state(TINY_T2V), str(good))
    data = good.read_bytes()
    for key in ("diffusion_models", "text_encoders", "vae"):
        (base / key / "truncated.safetensors").write_bytes(data[: len(data) // 2])
        save_file({"model.layers.0.mlp.up_proj.weight": torch.zeros(8, 4), "lm_head.weight": torch.zeros(10, 4)},
                  str(base / key / "llama_like.safetensors"))
        (base / key / "model.pt").write_bytes(b"\x80\x04K\x01.")  # a pickle (never unpickled)
    return base


def node_calls():
    loaders = ci.pack_module("nodes.loaders")
    return {
        "dit": lambda name: loaders.WanCoreLoadDiT().load(name, "default", "sdpa"),
        "text_encoder": lambda name: loaders.WanCoreLoadTextEncoder().load(name, "cpu", "fp32"),
        "vae": lambda name: loaders.WanCoreLoadVAE().load(name, "fp32"),
    }


@pytest.mark.parametrize("node", ["dit", "text_encoder", "vae"])
@pytest.mark.parametrize("name,expect", [
    ("truncated.safetensors", r"truncated\.safetensors is not a readable safetensors file .*download the .* again"),
    ("llama_like.safetensors", {"dit": r"llama_like\.safetensors is not a Wan DiT: missing patch_embedding",
                                "text_encoder": r"llama_like\.safetensors is not a umt5 text encoder \(no shared",
                                "vae": r"llama_like\.safetensors is not a Wan VAE \(no decoder"}),
    ("model.pt", r"model\.pt: \.pt files are Python pickles.*never loads them\. Use .*safetensors"),
])
def test_each_loader_node_names_the_bad_file(folders, node, name, expect):
    with pytest.raises(ValueError, match=expect[node] if isinstance(expect, dict) else expect):
        node_calls()[node](name)
