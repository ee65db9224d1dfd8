"""ComfyUI started inside this process the way its ``main.py`` starts, without the server.

The GPU acceptance run (``gpu_check.py``) drives the host in process: no HTTP server, front end or
PyAV, so it runs on a GPU machine that has only PyTorch and what is carried in. What ``main.py``
decides before any model loads is done here in the same order: its command line (``--cpu``,
``--disable-dynamic-vram``, ...), the CUDA allocator backend (``cuda_malloc``, before CUDA starts),
comfy-aimdo's start and DynamicVRAM (``CoreModelPatcher`` and ``aimdo_enabled``). Import this
module before torch touches CUDA.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import types

PACK = "wan_pack"


class _Missing:
    """What a name of the PyAV stand-in is: usable in imports and type checks, not at run time."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("PyAV is not installed on this machine; the GPU acceptance run encodes no video")


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = self.__dict__[name] = type(name, (_Missing,), {"__module__": self.__name__})
        return value


class _PyAVStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``av`` and its submodules as import-only stand-ins. ComfyUI 0.30's ``nodes`` imports
    ``comfy_api.latest``, which imports PyAV for its video types; PyAV (34 MiB) does not fit beside
    comfy-kitchen (43 MiB, imported unconditionally) in a GPU machine's 64 MiB per call, and this
    run decodes no video file. Used only where ``av`` cannot be imported, and installed after
    torchvision (which probes for PyAV and must find none); any real use raises."""

    def find_spec(self, name, path=None, target=None):
        if name == "av" or name.startswith("av."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        return None


def start(flags=(), comfyui=None) -> dict:
    """Start the host with ``flags`` as main.py would; returns what ran (for the report)."""
    comfyui = comfyui or os.environ.get("COMFYUI_PATH")
    if not comfyui or not os.path.exists(os.path.join(comfyui, "comfy")):
        raise SystemExit("no ComfyUI: set COMFYUI_PATH (scripts/gpu_check.sh does)")
    sys.path.insert(0, comfyui)
    sys.argv = ["main.py", *flags]
    # WAN_GPU_CHECK_NO_PYAV=1: as on a machine without PyAV (the smoke test runs that path)
    pyav = importlib.util.find_spec("av") is not None and not os.environ.get("WAN_GPU_CHECK_NO_PYAV")
    if not pyav:
        import torchvision  # noqa: F401  (it probes for PyAV itself: it must see none)

        sys.meta_path.insert(0, _PyAVStandIn())
    import comfy.options

    comfy.options.enable_args_parsing()
    from comfy.cli_args import args, enables_dynamic_vram

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import cuda_malloc  # noqa: F401  (sets PYTORCH_CUDA_ALLOC_CONF as main.py does, before CUDA starts)

    aimdo = None
    try:
        import comfy_aimdo.control as aimdo
    except ImportError as e:
        logging.warning("comfy-aimdo is not importable (%s): DynamicVRAM stays off", e)
    if aimdo is not None and enables_dynamic_vram():
        headroom = None if args.reserve_vram is None else int(args.reserve_vram * 1024 ** 3)
        try:
            aimdo.init(simple_vram_headroom=headroom, nvml_pressure=not args.disable_nvml_pressure)
        except TypeError:
            aimdo.init(simple_vram_headroom=headroom)
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher

    if aimdo is not None and enables_dynamic_vram() and mm.is_nvidia() and not mm.is_wsl() \
            and mm.torch_version_numeric >= (2, 8):
        try:
            ok = aimdo.init_devices((d.index, int(args.vram_headroom * 1024 ** 3)) for d in mm.get_all_torch_devices())
        except TypeError:
            ok = aimdo.init_devices(d.index for d in mm.get_all_torch_devices())
        if ok:
            comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
            comfy.memory_management.aimdo_enabled = True
    importlib.import_module("nodes")  # core nodes (KSampler, VAEDecode, UNETLoader, ...)
    return {**describe(), "pyav": "installed" if pyav else "import-only stand-in"}


def describe() -> dict:
    """What the host decided: DynamicVRAM, patcher class, attention function, device."""
    import torch

    import comfy.ldm.modules.attention as attention
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher

    device = mm.get_torch_device()
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
            "torch": torch.__version__, "dynamic_vram": bool(comfy.memory_management.aimdo_enabled),
            "core_patcher": comfy.model_patcher.CoreModelPatcher.__name__,
            "attention": getattr(attention.optimized_attention, "__name__", str(attention.optimized_attention)),
            "allocator": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default")}


def pack():
    """This repository imported as a ComfyUI custom node package, as ComfyUI imports it (after
    :func:`start`: the shared helper imports torch)."""
    from comfy_inprocess import import_pack  # tests/, on the path through benchmarks/common.py

    return import_pack()


def pack_module(name: str):
    pack()
    return importlib.import_module(f"{PACK}.{name}")


def run_io_node(cls, **inputs) -> tuple:
    """Run a core node written against ``comfy_api`` (e.g. TorchCompileModel); its outputs."""
    from comfy_inprocess import run_io_node as run

    return run(cls, **inputs)


def use_model_folder(root: str) -> None:
    """Model folders of the host under ``root`` (diffusion_models, vae, loras), as extra paths."""
    import folder_paths

    for kind in ("diffusion_models", "vae", "loras", "text_encoders"):
        folder_paths.add_model_folder_path(kind, os.path.join(root, kind))
    pack_module("nodes.host").register_model_folders()
