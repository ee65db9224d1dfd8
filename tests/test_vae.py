"""VAE parity with the official modules, ComfyUI's and diffusers', plus loading and errors."""

import pytest
import torch
from safetensors.torch import save_file

from conftest import rel_err
from references import comfy_wan_vae, diffusers_wan_vae, official_wan
from wan_core.errors import ModelLayoutError
from wan_core.vae import WanVAE
from wan_core.vae.keymap import vae_key_pairs
from wan_core.vae.loader import load_vae
from tiny_models.vae import TINY21, TINY22, random_vae_state

TOL = 1e-4


def ours(cfg, sd):
    m = WanVAE(cfg)
    m.load_state_dict(sd)
    return m.eval()


def official(cfg, sd):
    mod = official_wan("modules.vae2_1" if cfg.version == "2.1" else "modules.vae2_2")
    kw = dict(dim=cfg.dim, z_dim=cfg.z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
              temperal_downsample=[False, True, True], dropout=0.0)
    if cfg.version == "2.2":
        kw["dec_dim"] = cfg.dec_dim
    m = mod.WanVAE_(**kw)
    m.load_state_dict(sd)
    m.eval()
    return (lambda v: m.encode(v, [0.0, 1.0])), (lambda z: m.decode(z, [0.0, 1.0]).clamp(-1, 1))


def comfyui(cfg, sd):
    m = comfy_wan_vae(cfg, sd)
    return m.encode, (lambda z: m.decode(z).clamp(-1, 1))


def diffusers_ref(cfg, sd):
    m = diffusers_wan_vae(cfg, sd)
    enc = lambda v: m.encode(v).latent_dist.mean  # noqa: E731
    dec = lambda z: m.decode(z).sample.clamp(-1, 1)  # noqa: E731
    return enc, dec


REFS = {"official": official, "comfyui": comfyui, "diffusers": diffusers_ref}


@pytest.mark.parametrize("ref", sorted(REFS))
@pytest.mark.parametrize("cfg", [TINY21, TINY22], ids=["wan21", "wan22"])
@pytest.mark.parametrize("frames", [5, 9])
@torch.no_grad()
def test_vae_matches_reference(cfg, ref, frames):
    sd = random_vae_state(cfg, seed=1)
    model = ours(cfg, sd)
    r_enc, r_dec = REFS[ref](cfg, sd)
    g = torch.Generator().manual_seed(2)
    h, w = (cfg.stride[1] * 3, cfg.stride[2] * 5)  # non-square, odd latent size 3x5
    video = torch.rand(1, 3, frames, h, w, generator=g) * 2 - 1
    z = model.encode(video)
    assert z.shape == (1, cfg.z_dim, (frames - 1) // 4 + 1, 3, 5)
    assert rel_err(z, r_enc(video)) < TOL
    latent = torch.randn(1, cfg.z_dim, (frames - 1) // 4 + 1, 3, 5, generator=g)
    out = model.decode(latent)
    assert out.shape == (1, 3, frames, h, w)
    assert rel_err(out, r_dec(latent)) < TOL


@pytest.mark.parametrize("cfg", [TINY21, TINY22], ids=["wan21", "wan22"])
@pytest.mark.parametrize("layout", ["official", "comfy_prefixed", "diffusers"])
@torch.no_grad()
def test_vae_files_load_and_detect_version(tmp_path, cfg, layout):
    sd = random_vae_state(cfg, seed=4)
    if layout == "official":
        path = tmp_path / "wan_vae.safetensors"
        save_file(sd, str(path))
    elif layout == "comfy_prefixed":
        path = tmp_path / "wan_vae_prefixed.safetensors"
        save_file({"first_stage_model." + k: v for k, v in sd.items()}, str(path))
    else:
        pairs = vae_key_pairs(cfg)
        (tmp_path / "Wan-Diffusers" / "vae").mkdir(parents=True)
        save_file({pairs[k]: v for k, v in sd.items()}, str(tmp_path / "Wan-Diffusers/vae/diffusion_pytorch_model.safetensors"))
        path = tmp_path / "Wan-Diffusers"
    model = load_vae(path)
    assert model.config == cfg
    latent = torch.randn(1, cfg.z_dim, 2, 2, 3)
    assert torch.equal(model.decode(latent), ours(cfg, sd).decode(latent))


@pytest.mark.parametrize("cfg", [TINY21, TINY22], ids=["wan21", "wan22"])
def test_vae_bf16_on_request(tmp_path, cfg):
    """bf16 decode, tolerance sized to the dtype: no further from fp32 than ComfyUI's own Wan VAE in
    bf16 is from its fp32, on the same weights and latent (a fixed 0.1 let a broken layer through)."""
    sd = random_vae_state(cfg)
    save_file(sd, str(tmp_path / "v.safetensors"))
    m = load_vae(tmp_path / "v.safetensors", dtype=torch.bfloat16)
    assert m.dtype == torch.bfloat16
    latent = torch.randn(1, cfg.z_dim, 2, 4, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        truth = ours(cfg, sd).decode(latent)
        native = comfy_wan_vae(cfg, sd).to(torch.bfloat16).decode(latent.bfloat16()).float().clamp(-1, 1)
        mine = m.decode(latent).float()
    # the mean error is what the dtype sets (seeds 0-3 of both VAEs: ours / native 0.89-1.06); the
    # largest single pixel varies more between two bf16 implementations (0.56-1.31)
    mean_ours, mean_native = (mine - truth).abs().mean(), (native - truth).abs().mean()
    assert 0 < mean_ours <= 1.2 * mean_native, (mean_ours, mean_native)
    assert rel_err(mine, truth) <= 1.6 * rel_err(native, truth)


def test_dit_in_vae_slot(tmp_path):
    save_file({"blocks.0.ffn.0.weight": torch.zeros(2, 2), "patch_embedding.weight": torch.zeros(1)},
              str(tmp_path / "wan2.1_t2v_1.3B_bf16.safetensors"))
    with pytest.raises(ModelLayoutError, match="wan2.1_t2v_1.3B_bf16.safetensors is not a Wan VAE.*DiT"):
        load_vae(tmp_path / "wan2.1_t2v_1.3B_bf16.safetensors")


def test_channel_mismatch_is_clear():
    m = ours(TINY21, random_vae_state(TINY21))
    with pytest.raises(ValueError, match="48 channels; this Wan2.1 VAE takes 16.*matches the DiT"):
        m.decode(torch.zeros(1, 48, 1, 2, 2))


def test_bad_video_shape_names_nearest_valid():
    m = ours(TINY21, random_vae_state(TINY21))
    with pytest.raises(ValueError, match="6 frames at 20x16.*nearest valid: 5 frames at 16x16"):
        m.encode(torch.zeros(1, 3, 6, 16, 20))


def _local_state(cfg, off_center: float):
    """Weights with a trained VAE's locality: attention output zeroed (the official init) and the
    off-centre taps of 3x3 kernels scaled by ``off_center`` (0 = purely pointwise in space)."""
    sd = random_vae_state(cfg, 1)
    for k, v in sd.items():
        if k.endswith(("proj.weight", "proj.bias")):
            sd[k] = torch.zeros_like(v)
        elif v.dim() >= 4 and v.shape[-1] == 3:
            mask = torch.full_like(v, off_center)
            mask[..., 1, 1] = 1
            sd[k] = v * mask
    return sd


@pytest.mark.parametrize("cfg", [TINY21, TINY22], ids=["wan21", "wan22"])
@torch.no_grad()
def test_tiled_decode_places_and_blends_tiles_exactly(cfg):
    """With a spatially pointwise decoder every tile is exact, so tiled == untiled everywhere."""
    from wan_core.vae import decode_tiled

    m = ours(cfg, _local_state(cfg, 0.0))
    z = torch.randn(1, cfg.z_dim, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    full, tiled = m.decode(z), decode_tiled(m, z, tile=8, overlap=4)
    assert (tiled - full).abs().max() < 1e-5


@pytest.mark.parametrize("cfg", [TINY21, TINY22], ids=["wan21", "wan22"])
@torch.no_grad()
def test_tiled_decode_has_no_seams(cfg):
    """With local (not pointwise) kernels the blend keeps the difference small at every pixel,
    tile borders included."""
    from wan_core.vae import decode_tiled

    m = ours(cfg, _local_state(cfg, 0.05))
    z = torch.randn(1, cfg.z_dim, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    diff = (decode_tiled(m, z, tile=8, overlap=4) - m.decode(z)).abs()
    assert diff.max() < 0.1 and diff.mean() < 0.005
    # tile borders sit at latent columns 4, 8, 12 (x16 or x8 pixels): no spike there
    s = cfg.stride[2]
    border = torch.stack([diff[..., c * s - 1: c * s + 1] for c in (4, 8, 12, 16)]).mean()
    assert border < 10 * diff.mean() + 1e-3


def _seam_excess(out, full):
    """Per column boundary: how much the horizontal jump between neighbouring pixels differs from the
    untiled decode's (a seam is a jump the whole decode does not have)."""
    def jumps(x):
        return x[..., 1:] - x[..., :-1]
    return (jumps(out) - jumps(full)).abs().mean(dim=(0, 1, 2, 3))


@pytest.mark.parametrize("cfg", [TINY21, TINY22], ids=["wan21", "wan22"])
@torch.no_grad()
def test_cross_fade_removes_the_seams_a_hard_cut_makes(cfg):
    """Random weights keep everything that makes seams (3x3 taps, the middle attention over the whole
    frame), so a tile sees different context than the whole decode. Cut hard (no overlap), the tile
    borders jump (checked: these weights do make seams); cross-faded, the jump at every tile edge is no
    larger than between any two columns inside (a flat average in the overlaps leaves 1.5-1.8x)."""
    from wan_core.vae import decode_tiled
    from wan_core.vae.model import _tile_spans

    m = ours(cfg, random_vae_state(cfg, 1))
    z = torch.randn(1, cfg.z_dim, 2, 8, 24, generator=torch.Generator().manual_seed(0))
    s = cfg.stride[2]
    full = m.decode(z)

    def edges_and_inside(overlap):
        excess = _seam_excess(decode_tiled(m, z, tile=8, overlap=overlap), full)
        spans = _tile_spans(24, 8, overlap)
        edges = sorted({(a + n) * s - 1 for a, n in spans[:-1]} | {a * s - 1 for a, n in spans[1:]})
        inside = torch.ones_like(excess, dtype=torch.bool)
        inside[edges] = False
        return excess[edges], excess[inside].median()

    hard_edges, hard_inside = edges_and_inside(0)
    assert hard_edges.min() > 2.5 * hard_inside  # the seams exist
    faded_edges, faded_inside = edges_and_inside(4)
    assert faded_edges.max() < 1.25 * faded_inside
    assert faded_edges.max() < 0.5 * hard_edges.min()


def test_tiled_decode_rejects_bad_overlap():
    from wan_core.vae import decode_tiled

    m = ours(TINY21, random_vae_state(TINY21))
    with pytest.raises(ValueError, match="overlap 8 must be smaller than the tile size 8"):
        decode_tiled(m, torch.zeros(1, 16, 1, 20, 20), tile=8, overlap=8)


def test_truncated_vae_file(tmp_path):
    from wan_core.safetensors_io import CheckpointError

    save_file(random_vae_state(TINY21), str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "wan_2.1_vae.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="wan_2.1_vae.safetensors .*truncated or corrupt.*Wan VAE"):
        load_vae(tmp_path / "wan_2.1_vae.safetensors")


@pytest.mark.parametrize("cfg", [TINY21, TINY22], ids=["wan21", "wan22"])
@torch.no_grad()
def test_memory_layout_does_not_change_results(cfg, monkeypatch):
    """The CPU runs narrow stages channels-last; the default layout everywhere gives the same video."""
    import wan_core.vae.model as vae_model

    m = ours(cfg, random_vae_state(cfg, seed=3))
    g = torch.Generator().manual_seed(4)
    video = torch.rand(1, 3, 9, cfg.stride[1] * 2, cfg.stride[2] * 3, generator=g) * 2 - 1
    z = torch.randn(1, cfg.z_dim, 3, 2, 3, generator=g)
    fast = m.encode(video), m.decode(z)
    monkeypatch.setattr(vae_model, "CHANNELS_LAST_MAX_WIDTH", 0)
    plain = m.encode(video), m.decode(z)
    assert rel_err(fast[0], plain[0]) < 1e-5 and rel_err(fast[1], plain[1]) < 1e-5


@pytest.mark.parametrize("cfg", [TINY21, TINY22], ids=["wan21", "wan22"])
@torch.no_grad()
def test_decoder_runs_one_frame_at_a_time_after_temporal_upsampling(cfg):
    """Depth first: the last stages and the head never see more than one frame per call, so no
    full-resolution activation holds several frames."""
    m = ours(cfg, random_vae_state(cfg, seed=3))
    seen = []
    m.decoder.head[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[2]))
    video = m.decode(torch.randn(1, cfg.z_dim, 4, 2, 3, generator=torch.Generator().manual_seed(5)))
    assert video.shape[2] == 13 and seen == [1] * 13


def test_tile_spans_are_few_even_and_overlapping():
    from wan_core.vae.model import _tile_spans

    assert _tile_spans(30, 32, 8) == [(0, 30)]
    for n, tile, overlap in [(60, 32, 8), (104, 32, 8), (104, 64, 8), (20, 8, 4), (33, 16, 3), (200, 48, 16)]:
        spans = _tile_spans(n, tile, overlap)
        assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == n
        assert all(size <= tile for _, size in spans) and len({size for _, size in spans}) == 1
        assert all(a + sa - b >= overlap for (a, sa), (b, _) in zip(spans, spans[1:]))
        # the fewest tiles: one fewer tile of the full size could not cover n with these overlaps
        assert (len(spans) - 1) * (tile - overlap) + overlap < n
