"""ComfyUI (the test host) and this pack imported into the test process, on the CPU.

The pack is imported as the package ``wan_pack`` (as ComfyUI imports a custom node folder), so
``nodes``' relative imports of ``wan_core`` resolve; ComfyUI's own top-level ``nodes`` module
(core nodes: KSampler, LoraLoaderModelOnly, ...) stays ComfyUI's.  Core nodes written against
``comfy_api`` (EasyCache, context windows, guidance patches) are run through :func:`run_node`.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys

from references import comfy, comfy_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = "wan_pack"


def host():
    """Import ComfyUI in CPU mode with its ``nodes`` module and extras; returns that ``nodes`` module."""
    path = comfy_path()
    comfy("comfy.model_management")
    if "nodes" in sys.modules and not getattr(sys.modules["nodes"], "__file__", "").startswith(path):
        raise RuntimeError(f"a module 'nodes' from {sys.modules['nodes'].__file__} shadows ComfyUI's")
    if sys.path[0] != path:
        sys.path.insert(0, path)
    core_nodes = importlib.import_module("nodes")
    if not getattr(core_nodes, "_wan_pack_extras", False):
        asyncio.run(core_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        core_nodes._wan_pack_extras = True
    return core_nodes


def pack():
    """This repository imported as a ComfyUI custom node package (``wan_pack``), the host in CPU mode."""
    host()
    return import_pack()


def import_pack():
    """This repository imported as ComfyUI imports a custom node folder, into a host already started
    (here by :func:`host`; by ``benchmarks/gpu_host.py`` on a GPU)."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, os.path.join(ROOT, "__init__.py"),
                                                      submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


def pack_module(name: str):
    """A module of the pack, e.g. ``nodes.loaders`` or ``wan_core.dit.model``."""
    pack()
    return importlib.import_module(f"{PACK}.{name}")


def run_node(class_type: str, **inputs):
    """Run a core node by its class name (classic or ``comfy_api`` schema); returns its outputs tuple."""
    core_nodes = host()
    cls = core_nodes.NODE_CLASS_MAPPINGS[class_type]
    if hasattr(cls, "define_schema"):  # comfy_api io.ComfyNode
        return run_io_node(cls, **inputs)
    node = cls()
    out = getattr(node, cls.FUNCTION)(**inputs)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    return tuple(out["result"]) if isinstance(out, dict) else tuple(out)


def run_io_node(cls, **inputs) -> tuple:
    """Run a core node class written against ``comfy_api`` (io.ComfyNode); its outputs tuple."""
    cls.VALIDATE_CLASS()
    out = cls.PREPARE_CLASS_CLONE({}).execute(**inputs)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    return tuple(out.result) if hasattr(out, "result") else tuple(out)
