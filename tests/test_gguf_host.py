"""GGUF layers under ComfyUI's memory manager as on a GPU, run on the CPU: pinned memory, the
decode's memory where the host budgets it, the host's offload stream, the chunked decode."""

from __future__ import annotations

import pytest
import torch

from conftest import rel_err
from test_gpu_machinery import forward, inputs
from tiny_models.dit import TINY_T2V, random_dit_state
from tiny_models.gguf_files import random_blocks, write_dit_gguf
from tiny_models.loras import lora_state

TOL = 1e-5


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    path, _ = write_dit_gguf(random_dit_state(TINY_T2V, seed=3), tmp_path_factory.mktemp("gguf_host") / "wan.gguf")
    return str(path)


def with_lora(patcher, seed):
    import comfy.sd

    return comfy.sd.load_lora_for_models(patcher, None, lora_state(TINY_T2V, "lightx2v", rank=16, seed=seed), 1.0, 0)[0]


# -- pinned memory ----------------------------------------------------------------------------------


@pytest.fixture
def pinning_host(monkeypatch):
    """The host's pinned-memory path as on an NVIDIA machine (``MAX_PINNED_MEMORY`` set at start-up
    from the RAM), with ``cudaHostRegister`` / ``cudaHostUnregister`` stood in for: returns the
    registrations {address: size} as the host makes them."""
    import comfy.model_management as mm

    registered = {}

    class Cudart:
        def cudaHostRegister(self, ptr, size, flags):
            registered[ptr] = size
            return 0

        def cudaHostUnregister(self, ptr):
            registered.pop(ptr, None)
            return 0

    monkeypatch.setattr(mm, "MAX_PINNED_MEMORY", 1 << 40)
    monkeypatch.setattr(mm, "PINNED_MEMORY", {})
    monkeypatch.setattr(mm, "TOTAL_PINNED_MEMORY", 0)
    monkeypatch.setattr(torch.cuda, "cudart", lambda: Cudart())
    return registered


def test_gguf_weights_leave_the_file_map_before_the_host_pins_them(loaders, gguf_file, pinning_host):
    """A GGUF's weights lie on the file's copy-on-write memory map; the host page-locks the weights
    it offloads (partial load, partial unload). No registration may fall inside the map (it pins the
    file's pages: pin errors with a device sync each on a GPU, or RAM that is never given back); the
    LoRA's result is unchanged through the cycle. Break caught: pinning on the map (the old patcher)."""
    import comfy.model_management as mm

    model = with_lora(loaders.load_wan_model(gguf_file), seed=14)
    (start, end), = model.model.diffusion_model.mapped_ranges
    x, sigma, ctx = inputs(seed=10)
    mm.unload_all_models()
    mm.load_models_gpu([model])
    full = forward(model, x, sigma, ctx)
    mm.unload_all_models()
    cpu = torch.device("cpu")

    def on_map():
        return [(p, n) for p, n in pinning_host.items() if p < end and p + n > start]

    model.patch_model(device_to=cpu, lowvram_model_memory=model.model_size() // 3, load_weights=True)
    try:
        assert model.model.model_lowvram and pinning_host  # the host pinned the layers it offloaded
        assert on_map() == []
        assert rel_err(forward(model, x, sigma, ctx), full) < TOL
        model.partially_unload(cpu, memory_to_free=model.model_size())
        assert on_map() == []
        assert rel_err(forward(model, x, sigma, ctx), full) < TOL
    finally:
        model.unpatch_model(cpu)
    assert pinning_host == {}  # all unpinned again


# -- the decode's memory ------------------------------------------------------------------------------


def test_the_hosts_budget_counts_each_gguf_layers_decode(loaders, gguf_file):
    """The host budgets what an offloaded layer needs on the device while it computes (its
    ``_load_list``): for a GGUF layer that is the compact bytes, the weight decoded to the compute
    dtype with the decode's temporaries, and the LoRA's room on the decoded weight. The host alone
    counted the compact bytes as compute-dtype weights (here 2 x 0.56 bytes a value for Q4_K against
    at least 2 + 1.1); and the model's working memory (``memory_required``) holds the largest decode,
    which every call of a resident layer makes. Breaks caught: either override removed."""
    import comfy.model_base
    import comfy.model_patcher

    from wan_core.gguf.dequant import dequant_workspace_bytes

    model = with_lora(loaders.load_wan_model(gguf_file), seed=15)
    dtype = model.model.get_dtype_inference()
    entries = {e[-3]: e for e in model._load_list()}
    layer = model.model.diffusion_model.blocks[0].ffn[0]
    assert layer.qtype is not None
    cost, size = entries["diffusion_model.blocks.0.ffn.0"][:2]
    numel = layer.logical_shape[0] * layer.logical_shape[1]
    lora_room = numel * dtype.itemsize * comfy.model_patcher.LOWVRAM_PATCH_ESTIMATE_MATH_FACTOR
    assert cost == size + dequant_workspace_bytes(layer.qtype, numel, dtype) + lora_room
    assert cost > size + numel * dtype.itemsize  # at least the decoded weight on top of the bytes
    largest = max(m.decode_bytes(dtype) for m in model.model.diffusion_model.modules()
                  if getattr(m, "qtype", None) is not None)
    shape = (2, 16, 3, 6, 10)
    host = comfy.model_base.WAN21.memory_required(model.model, shape)
    assert model.model.memory_required(shape) == host + largest > host


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_decode_is_bit_identical(monkeypatch, dtype):
    """A weight decoded to a narrower dtype is decoded in chunks of rows (the kernels' fp32 values
    exist for one chunk at a time): every kernel gives the same bits as the whole-tensor decode."""
    from gguf import GGML_QUANT_SIZES

    import wan_core.gguf.dequant as dq

    for qtype in sorted(dq.supported_types()):
        block, size = GGML_QUANT_SIZES[qtype]
        rows, cols = 37, 4 * block
        raw = torch.from_numpy(random_blocks(qtype, (rows, cols), seed=int(qtype))).reshape(rows, -1)
        whole = dq.dequantize(raw, qtype, (rows, cols), dtype)
        monkeypatch.setattr(dq, "CHUNK_VALUES", 3 * block)  # 3 blocks a chunk: uneven, across rows
        assert torch.equal(dq.dequantize(raw, qtype, (rows, cols), dtype), whole), qtype
        monkeypatch.setattr(dq, "CHUNK_VALUES", 1 << 23)


def test_iq4_table_is_made_once_per_device():
    """IQ4_NL / IQ4_XS look values up in a 16-entry table: made once per device, not built (and on
    a GPU copied from the host, a sync) at every layer call."""
    import wan_core.gguf.dequant as dq

    cpu = torch.device("cpu")
    assert dq._kvalues(cpu) is dq._kvalues(cpu)


# -- the host's offload stream ----------------------------------------------------------------------


def test_offloaded_compact_bytes_are_copied_on_the_hosts_offload_stream(loaders, gguf_file, monkeypatch):
    """A GGUF layer whose bytes are not on the compute device copies them as the host's own layers
    copy offloaded weights: on the host's offload stream, the compute stream waiting for that copy,
    and the offload stream waiting for the compute stream once the bytes are decoded. Streams and
    the device are stand-ins (the ``meta`` device computes shapes only); what is checked is the
    order of the calls. Break caught: the copy on the compute stream (``Tensor.to``, the old path)."""
    import comfy.model_management as mm

    events = []

    class Stream:
        def __init__(self, name):
            self.name = name

        def wait_stream(self, other):
            events.append(f"{self.name} waits for {other.name}")

        def as_context(self, stream):
            events.append(f"copy on {self.name}")
            return torch.device("meta")  # a context manager; the copy itself is done by the host's cast_to

    offload, compute = Stream("offload"), Stream("compute")
    monkeypatch.setattr(mm, "get_offload_stream", lambda device: offload)
    monkeypatch.setattr(mm, "current_stream", lambda device: compute)
    layer = loaders.load_wan_model(gguf_file).model.diffusion_model.blocks[0].ffn[0]
    assert layer.qtype is not None and layer.weight.device.type == "cpu"
    x = torch.empty(2, 7, layer.logical_shape[1], device="meta")
    out = layer(x)
    assert out.shape == (2, 7, layer.logical_shape[0])
    assert events == ["copy on offload", "compute waits for offload", "offload waits for compute"]


# -- what a LoRA that does not fit reports ------------------------------------------------------------


def test_a_lora_that_does_not_fit_is_reported_once_per_load(loaders, gguf_file, tmp_path, caplog):
    """A LoRA made for a wider model through the host's LoRA loading on a GGUF DiT: the host's lines
    for keys whose shapes do not fit ("ERROR lora ...", "WARNING SHAPE MISMATCH ...") appear once
    each over a 4-step run, as on the same weights in safetensors (merged once at load), not once
    per step and layer call (an earlier main: 172 lines for these 49 messages)."""
    import logging

    import nodes
    from safetensors.torch import save_file

    from wan_core.dit.config import WanDiTConfig

    lora = lora_state(WanDiTConfig(dim=384, ffn_dim=512, num_heads=3, num_layers=2), "lightx2v", rank=8, seed=1)
    ref = tmp_path / "same.safetensors"
    save_file({f"model.diffusion_model.{k}": v for k, v in random_dit_state(TINY_T2V, seed=3).items()}, str(ref))
    pos = [[torch.randn(1, 512, 4096, generator=torch.Generator().manual_seed(2)), {}]]
    lines = {}
    for kind, path in (("gguf", gguf_file), ("safetensors", str(ref))):
        import comfy.sd

        model = comfy.sd.load_lora_for_models(loaders.load_wan_model(path), None, lora, 1.0, 0)[0]
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            nodes.common_ksampler(model, 0, 4, 5.0, "euler", "simple", pos, pos,
                                  {"samples": torch.zeros(1, 16, 3, 6, 10)})
        lines[kind] = [r.getMessage() for r in caplog.records
                       if r.getMessage().startswith(("ERROR lora", "WARNING SHAPE MISMATCH"))]
    assert lines["gguf"] and len(lines["gguf"]) == len(set(lines["gguf"]))  # each once
    assert sorted(set(lines["gguf"])) == sorted(set(lines["safetensors"]))
