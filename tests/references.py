"""Importers for the reference implementations the tests compare against.

- the official code (PyPI ``wan22``, module ``wan``), imported without its heavy ``__init__``,
  with its CUDA-only bits replaced in this process only (see ../shared/reference/testing.md);
- diffusers; transformers; gguf (plain imports);
- ComfyUI's own Wan code, from the test host found through ``COMFYUI_PATH``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import torch
import torch.nn.functional as F


def _empty_package(name: str, path: str) -> None:
    if name not in sys.modules:
        mod = types.ModuleType(name)
        mod.__path__ = [path]
        sys.modules[name] = mod


def _sdpa_flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                          causal=False, window_size=(-1, -1), deterministic=False, dtype=None, version=None):
    # Same signature as wan.modules.attention.flash_attention; exact when no sequence is padded.
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.to(q.dtype).transpose(1, 2))
    return out.transpose(1, 2)


def official_wan(submodule: str):
    """Import ``wan.<submodule>`` (e.g. ``modules.model``) from the installed wan22 package."""
    if "wan" in sys.modules:
        root = sys.modules["wan"].__path__[0]
    else:
        spec = importlib.util.find_spec("wan")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the official reference package is missing: pip install --no-deps wan22")
        root = list(spec.submodule_search_locations)[0]
    _empty_package("wan", root)
    _empty_package("wan.modules", os.path.join(root, "modules"))
    _empty_package("wan.utils", os.path.join(root, "utils"))
    if submodule == "modules.t5":
        torch.cuda.current_device = lambda: "cpu"  # t5.py calls it in a default argument at import
    mod = importlib.import_module(f"wan.{submodule}")
    if submodule == "modules.model":
        mod.flash_attention = _sdpa_flash_attention
    return mod


def comfy_path() -> str:
    path = os.environ.get("COMFYUI_PATH")
    if not path or not os.path.exists(os.path.join(path, "comfy")):
        raise RuntimeError("COMFYUI_PATH does not point at a ComfyUI checkout; run the tests via scripts/test.sh")
    return path


def comfy(module: str):
    """Import a module of the ComfyUI host (e.g. ``comfy.ldm.wan.model``) in CPU mode."""
    path = comfy_path()
    if path not in sys.path:
        sys.path.insert(0, path)
    if "comfy.cli_args" not in sys.modules:
        import comfy.options  # noqa: PLC0415

        comfy.options.enable_args_parsing(False)
        import comfy.cli_args  # noqa: PLC0415

        comfy.cli_args.args.cpu = True
    return importlib.import_module(module)


def comfy_wan_vae(cfg, sd: dict, assign: bool = False):
    """ComfyUI's native Wan VAE (``vae.py`` / ``vae2_2.py``) sized by a ``WanVAEConfig``, ``sd`` loaded."""
    mod = comfy("comfy.ldm.wan.vae" if cfg.version == "2.1" else "comfy.ldm.wan.vae2_2")
    kw = dict(dim=cfg.dim, z_dim=cfg.z_dim, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
              temperal_downsample=[False, True, True])
    if cfg.version == "2.2":
        kw["dec_dim"] = cfg.dec_dim
    m = mod.WanVAE(**kw)
    m.load_state_dict(sd, assign=assign)
    return m.eval()


def diffusers_wan_vae(cfg, sd: dict, assign: bool = False):
    """diffusers' ``AutoencoderKLWan`` sized by a ``WanVAEConfig``, ``sd`` (official names) loaded."""
    from diffusers import AutoencoderKLWan
    from wan_core.vae.keymap import vae_key_pairs

    kw = dict(base_dim=cfg.dim, z_dim=cfg.z_dim)
    if cfg.version == "2.2":
        kw.update(decoder_base_dim=cfg.dec_dim, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                  scale_factor_spatial=16)
    m = AutoencoderKLWan(**kw)
    pairs = vae_key_pairs(cfg)
    m.load_state_dict({pairs[k]: v for k, v in sd.items()}, strict=True, assign=assign)
    return m.eval()
