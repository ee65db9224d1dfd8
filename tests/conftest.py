import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

# Never reach a hub: every model and tokenizer in the tests is made here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the reference's scale."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture
def tmp_models(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def loaders():
    """The pack's loader nodes module, imported into the in-process host (CPU mode)."""
    import comfy_inprocess as ci

    ci.host()
    return ci.pack_module("nodes.loaders")
