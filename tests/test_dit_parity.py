"""Our DiT against the official WanModel, diffusers' WanTransformer3DModel and ComfyUI's WanModel.

Same random weights (fp32), odd non-square latent 3x6x10, batch 2, several timesteps, text of
different lengths (ours pads to 512 itself), per-token timesteps for the 48-channel TI2V family.
"""

import pytest
import torch

from conftest import rel_err
from references import comfy, official_wan
from tiny_models.dit import TINY_T2V, TINY_TI2V, random_dit_state
from wan_core import WanDiT
from wan_core.dit.keymap import official_to_diffusers

TOL = 1e-4
LATENT = (3, 6, 10)
TIMESTEPS = [torch.tensor([999.0, 1.0]), torch.tensor([500.0, 737.25])]


def _inputs(cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_channels, *LATENT, generator=g)
    texts = [torch.randn(20, 4096, generator=g), torch.randn(37, 4096, generator=g)]
    padded = torch.stack([torch.cat([u, u.new_zeros(512 - len(u), 4096)]) for u in texts])
    return x, texts, padded


def _per_token(t, cfg):
    """TI2V per-token timesteps: the first latent frame at t=0 (a start image), the rest at t."""
    tokens_per_frame = (LATENT[1] // 2) * (LATENT[2] // 2)
    tt = t[:, None].repeat(1, LATENT[0] * tokens_per_frame)
    tt[:, :tokens_per_frame] = 0
    return tt


def _ours(cfg, sd):
    m = WanDiT(cfg)
    m.load_state_dict(sd)
    return m.eval()


def official_model(cfg, sd):
    """The official ``wan.modules.model.WanModel`` for ``cfg`` with ``sd`` loaded (fp32)."""
    mod = official_wan("modules.model")
    m = mod.WanModel(
        model_type="ti2v" if cfg.in_channels == 48 else "t2v", patch_size=cfg.patch_size, text_len=512,
        in_dim=cfg.in_channels, dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=4096,
        out_dim=cfg.out_channels, num_heads=cfg.num_heads, num_layers=cfg.num_layers, cross_attn_norm=True,
    )
    m.load_state_dict(sd)
    return m.eval()


def _official(cfg, sd):
    m = official_model(cfg, sd)

    def run(x, t, texts, padded):
        seq_len = LATENT[0] * (LATENT[1] // 2) * (LATENT[2] // 2)
        if t.dim() == 1:  # the official forward expands [B] timesteps correctly only for B == 1
            t = t[:, None].expand(len(t), seq_len)
        return torch.stack(m(list(x), t, list(texts), seq_len))

    return run


def _diffusers(cfg, sd):
    from diffusers import WanTransformer3DModel

    m = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, text_dim=4096, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
    )
    missing, unexpected = m.load_state_dict({official_to_diffusers(k): v for k, v in sd.items()}, strict=True)
    assert not missing and not unexpected
    m.eval()
    return lambda x, t, texts, padded: m(x, t, padded, return_dict=False)[0]


def _comfy(cfg, sd):
    wan = comfy("comfy.ldm.wan.model")
    ops = comfy("comfy.ops")
    m = wan.WanModel(
        model_type="t2v", patch_size=cfg.patch_size, in_dim=cfg.in_channels, dim=cfg.dim, ffn_dim=cfg.ffn_dim,
        freq_dim=cfg.freq_dim, text_dim=4096, out_dim=cfg.out_channels, num_heads=cfg.num_heads,
        num_layers=cfg.num_layers, cross_attn_norm=True, device="cpu", dtype=torch.float32,
        operations=ops.disable_weight_init,
    )
    m.load_state_dict(sd, strict=True)
    m.eval()
    return lambda x, t, texts, padded: m(x, t, padded)


REFERENCES = {"official": _official, "diffusers": _diffusers, "comfyui": _comfy}


@pytest.mark.parametrize("reference", sorted(REFERENCES))
@pytest.mark.parametrize("cfg", [TINY_T2V, TINY_TI2V], ids=["t2v16", "ti2v48"])
@torch.no_grad()
def test_dit_matches_reference(cfg, reference):
    sd = random_dit_state(cfg, seed=3)
    ours = _ours(cfg, sd)
    ref = REFERENCES[reference](cfg, sd)
    x, texts, padded = _inputs(cfg)
    for t in TIMESTEPS:
        steps = [t] + ([_per_token(t, cfg)] if cfg.per_token_timesteps else [])
        for tt in steps:
            out = ours(x, tt, texts)
            expected = ref(x, tt, texts, padded)
            assert out.shape == expected.shape == x.shape[:1] + (cfg.out_channels,) + LATENT
            err = rel_err(out, expected)
            assert err < TOL, f"{reference} t={tt.flatten()[:3].tolist()}: rel err {err:.2e}"


@torch.no_grad()
def test_per_token_timesteps_change_only_what_they_should():
    """A start-image frame at t=0 changes the output; a constant per-token t equals the scalar t."""
    cfg = TINY_TI2V
    ours = _ours(cfg, random_dit_state(cfg, seed=5))
    x, texts, _ = _inputs(cfg)
    t = torch.tensor([700.0, 300.0])
    flat = ours(x, t, texts)
    const = ours(x, t[:, None].expand(2, LATENT[0] * 15).clone(), texts)
    assert torch.equal(flat, const)
    masked = ours(x, _per_token(t, cfg), texts)
    assert rel_err(masked, flat) > 1e-3


@torch.no_grad()
def test_batch_rows_are_independent():
    cfg = TINY_T2V
    ours = _ours(cfg, random_dit_state(cfg, seed=7))
    x, texts, _ = _inputs(cfg)
    t = torch.tensor([900.0, 100.0])
    both = ours(x, t, texts)
    one = ours(x[1:], t[1:], texts[1:])
    assert rel_err(both[1:], one) < 1e-5
