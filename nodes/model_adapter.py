"""wan_core's WanDiT as the diffusion model of a ComfyUI ``MODEL``.

:class:`ComfyWanDiT` subclasses :class:`wan_core.dit.WanDiT`, so its state-dict names are the
native ``comfy.ldm.wan.model.WanModel`` names (LoRA key maps, weight patches and object patches
find the same keys), and gives it the native call signature.  ``transformer_options`` are mapped
onto wan_core's neutral :class:`~wan_core.dit.hooks.DiTHooks`:

| ComfyUI                                            | wan_core hook                      |
|----------------------------------------------------|------------------------------------|
| ``DIFFUSION_MODEL`` wrappers (EasyCache, ...)      | around the whole forward           |
| ``patches_replace["dit"][("double_block", i)]``    | ``block_replace[i]``               |
| ``patches["double_block"]``                        | ``after_block``                    |
| ``patches["attn1_patch"]``                         | ``self_attn_patches``              |
| ``patches["attn2_patch"]``                         | ``cross_attn_patches``             |
| ``patches["attn1_output_patch"/"attn2_output_patch"]`` | ``attn_output_patches``        |
| ``optimized_attention_override``                   | ``attention``                      |
| attention backend ``auto`` (the default)           | ``attention`` = the host's function |
| ``grid_sizes``, ``block_index``, ``total_blocks``  | ``on_grid`` / ``on_block``         |
| Cancel (``throw_exception_if_processing_interrupted``) | ``on_block``, before every block |

With the backend ``auto`` attention is the function native Wan calls, looked up at every call in
``comfy.ldm.wan.model`` (which imports ``comfy.ldm.modules.attention.optimized_attention``): it
follows ``--use-sage-attention`` / ``--use-flash-attention`` / ``--use-pytorch-cross-attention``
and any node that patches that function after start-up.
"""

from __future__ import annotations

import weakref

import torch

import comfy.ldm.wan.model as native_wan
import comfy.model_management
import comfy.patcher_extension

from ..wan_core.dit.hooks import BlockState, DiTHooks
from ..wan_core.dit.model import TEXT_KV_REUSE_MAX_TOKENS, WanDiT
from . import host_layers

# The text's embedding and every block's cross-attention keys/values are projected once per sampling
# run, as wan_core's own loop does, for clips up to TEXT_KV_REUSE_MAX_TOKENS video tokens.
# per sampling run: id(the run's sample_sigmas tensor) -> (weak reference to it, its cache); an entry is
# dropped when that tensor is freed, so the projected text does not outlive the run
_RUN_TEXT: dict = {}


def _run_cache(run: torch.Tensor) -> dict:
    entry = _RUN_TEXT.get(id(run))
    if entry is not None and entry[0]() is run:
        return entry[1]
    cache: dict = {}
    _RUN_TEXT[id(run)] = (weakref.ref(run, lambda _, key=id(run): _RUN_TEXT.pop(key, None)), cache)
    return cache


HOST_ATTENTION = "auto"  # the attention choice that follows the host (command line, patches)


def host_attention(options: dict):
    """Attention through the function native Wan calls (looked up per call, so patches apply); it
    also runs an ``optimized_attention_override`` from ``options``."""

    def attend(q, k, v, site):
        heads = q.shape[2]
        return native_wan.optimized_attention(q.flatten(2), k.flatten(2), v.flatten(2), heads=heads,
                                              transformer_options=options)

    return attend


def hooks_from_options(options: dict, x_input: torch.Tensor, backend: str = HOST_ATTENTION) -> DiTHooks:
    """The DiTHooks for one forward under ComfyUI ``transformer_options`` (filled in place, as native)."""
    patches = options.get("patches", {})
    replace = options.get("patches_replace", {}).get("dit", {})

    def on_grid(grid):
        options["grid_sizes"] = torch.Size(grid)

    def on_block(site):
        comfy.model_management.throw_exception_if_processing_interrupted()
        options["block_index"] = site.block_index
        options["total_blocks"] = site.total_blocks
        options["block_type"] = "double"

    hooks = DiTHooks(on_grid=on_grid, on_block=on_block)
    if backend == HOST_ATTENTION or "optimized_attention_override" in options:
        hooks.attention = host_attention(options)
    hooks.self_attn_patches = [
        (lambda out, q, k, site, p=p: p({"x": out, "q": q, "k": k, "transformer_options": options}))
        for p in patches.get("attn1_patch", [])
    ]
    hooks.cross_attn_patches = [
        (lambda x, site, p=p: p({"x": x, "transformer_options": options})) for p in patches.get("attn2_patch", [])
    ]
    for kind, key in (("self", "attn1_output_patch"), ("cross", "attn2_output_patch")):
        if key in patches:
            hooks.attn_output_patches[kind] = [(lambda out, site, p=p: p(out, options)) for p in patches[key]]
    hooks.after_block = [
        (lambda x, site, p=p: p({"img": x, "x": x_input, "vec": None, "block_index": site.block_index,
                                 "img_offset": 0, "transformer_options": options})["img"])
        for p in patches.get("double_block", [])
    ]
    for (kind, index), fn in replace.items():
        if kind == "double_block":
            hooks.block_replace[index] = _block_replacement(fn, options)
    return hooks


def _block_replacement(fn, options: dict):
    """A native ``("double_block", i)`` replacement as a wan_core ``block_replace`` entry."""

    def replaced(state: BlockState, run_block):
        def original_block(args):
            st = BlockState(args["img"], args["txt"], args["vec"], args["pe"], state.text_kv)
            return {"img": run_block(st)}

        args = {"img": state.x, "txt": state.context, "vec": state.modulation, "pe": state.rope,
                "transformer_options": options}
        return fn(args, {"original_block": original_block})["img"]

    return replaced


def _version(t: torch.Tensor):
    """A tensor's in-place version counter; None for inference tensors (ComfyUI runs nodes under
    ``torch.inference_mode``, where they have none)."""
    try:
        return t._version
    except RuntimeError:
        return None


class ComfyWanDiT(WanDiT):
    """The Wan DiT with the interface ComfyUI's ``BaseModel`` calls (native ``WanModel.forward``)."""

    passes = 0  # forwards actually run (Wan Sampler reports what step caches saved)
    weight_dtype = None  # set by a host that builds the layers in a storage dtype (as native's ``dtype``)

    def __init__(self, config, operations=torch.nn, compute_dtype=torch.float32, attention_backend=HOST_ATTENTION,
                 device=None, dtype=None):
        super().__init__(config, operations, compute_dtype, attention_backend, device=device, dtype=dtype)
        self.weight_dtype = dtype
        host_layers.attach(self, compute_dtype)  # the fp32 regions on the host's layers

    @property
    def dtype(self) -> torch.dtype:
        """What BaseModel.get_dtype reads: the storage dtype where the host chose one (as native), else
        the compute dtype (GGUF blocks, wan_core's own casting layers)."""
        return self.weight_dtype or self.compute_dtype

    def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={}, **kwargs):
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward,
            self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)

    def _forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={}, **kwargs):
        if clip_fea is not None or time_dim_concat is not None:
            raise ValueError("this Wan DiT is a text-to-video model: CLIP-vision image features and time-concatenated "
                             "latents (image-to-video / FLF nodes) need an I2V model")
        unknown = [k for k in ("reference_latent", "context_latents", "vace_context") if kwargs.get(k) is not None]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: inputs of other Wan variants; this DiT is text-to-video")
        t = self._token_timesteps(timestep, x)
        hooks = hooks_from_options(transformer_options, x, self.attention_backend)
        self._count_pass()
        # fp32, as the head computes it: BaseModel takes the output as float (no rounding to x's dtype)
        return self.predict(x, t, self._text_for_run(context, x, transformer_options), hooks=hooks)

    def predict(self, x, t, context, text_embedded=False, hooks=None):
        """wan_core's forward; called without hooks (wan_core's own sampling loop), attention is still
        the host's when the backend is ``auto``."""
        if hooks is None and self.attention_backend == HOST_ATTENTION:
            hooks = DiTHooks(attention=host_attention({}))
        return super().predict(x, t, context, text_embedded, hooks)

    def _count_pass(self):
        if not torch.compiler.is_compiling():  # compiled, each count would be a guard that fails (not counted)
            self.passes += 1

    def _text_weights(self) -> tuple:
        """What the projected text depends on: the patch set the owning model was loaded with (core
        gives every change of patches a new uuid), and the text-embedding and cross-attention k/v
        weights (a LoRA merge replaces or rewrites them; per-call patches sit in their functions)."""
        owner = getattr(self, "owner", None)
        base = owner() if owner is not None else None
        layers = [self.text_embedding[0], self.text_embedding[2]]
        for block in self.blocks:
            attn = block.cross_attn
            layers += [attn.k, attn.v, attn.norm_k]
        key = [getattr(base, "current_weight_patches_uuid", None)]
        for layer in layers:
            for name in ("weight", "bias"):
                p = getattr(layer, name, None)
                key.append(None if p is None else (id(p), p.data_ptr(), _version(p)))
            key.append(tuple(map(id, getattr(layer, "weight_function", ()))))
            key.append(tuple(map(id, getattr(layer, "bias_function", ()))))
            key.append(tuple(map(id, getattr(layer, "patch_functions", {}).values())))
        return tuple(key)

    def _text_for_run(self, context, x, options: dict):
        """The umt5 context, or its projection reused from an earlier step of the same sampling run.
        Not under torch.compile: the run cache is Python bookkeeping whose guards would fail on every
        run (compiled, the text is projected every step, as native does)."""
        run = options.get("sample_sigmas")
        frames, per_frame = self._patch_grid(x)
        if run is None or context is None or frames * per_frame > TEXT_KV_REUSE_MAX_TOKENS \
                or torch.compiler.is_compiling():
            return context
        cache = _run_cache(run)
        weights = self._text_weights()
        key = (id(self), tuple(context.shape), context.dtype, str(context.device))
        for seen, text, seen_weights in cache.get(key, []):
            if seen_weights == weights and torch.equal(seen, context):
                return text
        text = self.prepare_text(context)
        entries = cache.setdefault(key, [])
        entries.append((context.clone(), text, weights))
        del entries[:-4]  # cond, uncond and their batch; older ones are from replaced weights
        return text

    def _patch_grid(self, x: torch.Tensor):
        """(frames, tokens per frame) of the patch grid for latent ``x`` (padded up to whole patches)."""
        pt, ph, pw = self.config.patch_size
        return -(-x.shape[2] // pt), (-(-x.shape[3] // ph)) * (-(-x.shape[4] // pw))

    def _token_timesteps(self, timestep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[B] as is; per-frame [B, T] (core's TI2V denoise mask) -> per-token [B, T*h*w]."""
        if timestep.dim() < 2 or timestep.shape[1] == 1:
            return timestep.reshape(timestep.shape[0])
        frames, per_frame = self._patch_grid(x)
        if timestep.shape[1] == frames * per_frame:
            return timestep
        if timestep.shape[1] != frames:
            raise ValueError(f"timesteps of shape {tuple(timestep.shape)} for a latent of {frames} frames")
        return timestep.repeat_interleave(per_frame, dim=1)

