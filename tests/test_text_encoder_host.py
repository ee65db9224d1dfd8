"""The umt5 text encoder under ComfyUI's memory manager, as on a GPU: every weighted layer may be
left off the device by low-VRAM partial loading (none is pinned to one device, the token table is
looked up where it is kept), the compute device is the host's, and per-layer quantized umt5 files
are read (fp8) or refused with the file's name (other formats).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import comfy_inprocess as ci
from conftest import rel_err
from tiny_models.umt5 import SENTENCES, tiny_umt5_state, train_spiece, write_comfy_umt5
from wan_core.safetensors_io import CheckpointError
from wan_core.text.loader import load_text_encoder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import sentencepiece

    proto = train_spiece()
    vocab = sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size()
    sd = tiny_umt5_state(vocab, seed=2)
    base = tmp_path_factory.mktemp("te_host")
    scaled = base / "umt5_scaled.safetensors"
    write_comfy_umt5(sd, proto, scaled, fp8=torch.float8_e4m3fn, scaled=True)
    with safe_open(str(scaled), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "scaled_fp8"}
    per_layer = {k.replace(".scale_weight", ".weight_scale"): v for k, v in tensors.items()}
    layers = {k[: -len(".weight_scale")]: {"format": "float8_e4m3fn"} for k in per_layer if k.endswith(".weight_scale")}
    meta = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    save_file(per_layer, str(base / "umt5_per_layer_fp8.safetensors"), metadata=meta)
    int8 = {k: v for k, v in layers.items()}
    first = next(iter(int8))
    int8[first] = {"format": "int8_tensorwise"}
    save_file(per_layer, str(base / "umt5_int8.safetensors"),
              metadata={"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": int8})})
    plain = base / "umt5_fp32.safetensors"
    write_comfy_umt5(sd, proto, plain)
    return {"scaled": scaled, "per_layer": base / "umt5_per_layer_fp8.safetensors", "int8": base / "umt5_int8.safetensors",
            "fp32": plain}


def test_per_layer_fp8_umt5_equals_the_scaled_file(files):
    """The same fp8 weights and scales in ComfyUI's per-layer format (``weight_scale`` + header)
    give the same embeddings as in the legacy scaled format; today's main ignored the scales."""
    prompts = SENTENCES[:3]
    a = load_text_encoder(files["scaled"]).encode(prompts)
    b = load_text_encoder(files["per_layer"]).encode(prompts)
    assert torch.equal(a, b)


def test_per_layer_format_the_encoder_cannot_read_names_the_file(files):
    with pytest.raises(CheckpointError, match=r"umt5_int8\.safetensors.*int8_tensorwise"):
        load_text_encoder(files["int8"])


@pytest.mark.parametrize("kind", ["scaled", "fp32"])
def test_every_weighted_layer_can_stay_off_the_device_under_partial_loading(files, kind):
    """Low-VRAM partial loading leaves the modules that do not fit on the offload device; a module
    that cannot cast per call (transformers' layer norm, the relative-position and token tables on
    today's main) would then meet inputs on the GPU. Every weighted module here casts, and the
    output under a small budget equals the fully loaded one."""
    ci.host()
    import comfy.model_management as mm

    host = ci.pack_module("nodes.host")
    encoder = load_text_encoder(files[kind])
    managed = host.manage(encoder, "text_encoder", "umt5", torch.device("cpu"), torch.device("cpu"))
    weighted = [(n, m) for n, m in encoder.named_modules() if list(m.parameters(recurse=False))]
    pinned = [n for n, m in weighted if not hasattr(m, "comfy_cast_weights")]
    assert not pinned, pinned[:5]
    full = encoder.encode(SENTENCES[:2])
    mm.unload_all_models()
    cpu = torch.device("cpu")
    managed.patcher.patch_model(device_to=cpu, lowvram_model_memory=managed.patcher.model_size() // 4)
    try:
        assert managed.patcher.model.model_lowvram
        assert torch.equal(encoder.encode(SENTENCES[:2]), full)
    finally:
        managed.patcher.unpatch_model(cpu)


def test_encode_runs_on_the_hosts_device_not_where_the_table_is(files):
    """Wan Encode Prompts runs the encoder on the patcher's load device, whatever device the host
    left the token table on (offloaded, it is not where the compute goes). The load device here is
    ``cpu:0``, a device object distinct from the table's ``cpu``: every device the encode asks
    for while the node encodes must be it. Break caught: the node no longer handing the encoder its
    load device (the encode then follows the table, as it does alone)."""
    ci.host()
    host = ci.pack_module("nodes.host")
    prompts = ci.pack_module("nodes.prompts")
    encoder = load_text_encoder(files["fp32"])
    assert encoder.weight_device() == encoder.model.shared.weight.device == torch.device("cpu")  # alone
    load_device = torch.device("cpu", 0)
    managed = host.manage(encoder, "text_encoder", "umt5", load_device, torch.device("cpu"))
    asked, real = [], encoder.weight_device
    encoder.weight_device = lambda: asked.append(real()) or asked[-1]
    with torch.inference_mode():
        prompts.WanCoreEncodePrompts().encode(managed, SENTENCES[0], "blurry", False)
    assert asked and all(d == load_device for d in asked), asked


def test_encode_prompts_node_one_per_line(files):
    """``one_prompt_per_line``: row i is line i encoded alone; one negative line per prompt or one for
    all; an empty negative is the official default; a count that fits neither is refused."""
    ci.host()
    host = ci.pack_module("nodes.host")
    prompts = ci.pack_module("nodes.prompts")
    encoder = load_text_encoder(files["fp32"])
    managed = host.manage(encoder, "text_encoder", "umt5", torch.device("cpu"), torch.device("cpu"))
    node = prompts.WanCoreEncodePrompts()
    lines = SENTENCES[:3]
    with torch.inference_mode():
        pos, neg = node.encode(managed, "\n".join(lines), "blurry\nstatic\nlow quality", True)["result"]
        alone = [encoder.encode([line]) for line in lines]
        negs = [encoder.encode([n]) for n in ("blurry", "static", "low quality")]
        assert pos[0][0].shape[0] == 3 and neg[0][0].shape[0] == 3
        for i in range(3):  # (batched with padding to the longest line: equal up to float rounding)
            assert rel_err(pos[0][0][i], alone[i][0]) < 1e-5 and rel_err(neg[0][0][i], negs[i][0]) < 1e-5
            assert rel_err(pos[0][0][i], alone[(i + 1) % 3][0]) > 1e-2  # and not another line's
        _, default = node.encode(managed, "\n".join(lines), "   ", True)["result"]
        assert rel_err(default[0][0], encoder.encode([prompts.OFFICIAL_NEGATIVE])) < 1e-5
        with pytest.raises(ValueError, match="3 positive prompts but 2 negative lines"):
            node.encode(managed, "\n".join(lines), "a\nb", True)
        single, _ = node.encode(managed, "\n".join(lines), "", False)["result"]  # off: the text is one prompt
        assert single[0][0].shape[0] == 1
