"""Loading never holds a second copy of the model: peak RSS growth is about the model's size."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from tiny_models.dit import random_dit_state
from wan_core import WanDiTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ~270 MB in fp32: big enough that allocator noise is small against it.
MEDIUM = WanDiTConfig(dim=1024, ffn_dim=4096, num_heads=8, num_layers=4)


@pytest.fixture(scope="module")
def medium_state():
    return random_dit_state(MEDIUM, seed=0)


def _probe(path, *extra):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "load_probe.py"), str(path), *extra],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("file_dtype,weight_dtype", [("bf16", None), ("fp32", "bf16"), ("bf16", "fp8")])
def test_peak_rss_is_about_model_size(tmp_path, medium_state, file_dtype, weight_dtype):
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[file_dtype]
    path = tmp_path / f"medium_{file_dtype}.safetensors"
    save_file({k: v.to(dtype) for k, v in medium_state.items()}, str(path))
    r = _probe(path, *(["--weight-dtype", weight_dtype] if weight_dtype else []))
    # the largest single tensor may exist twice for a moment while its dtype is converted
    slack = 32 * 2**20
    assert r["peak_growth"] <= 1.2 * r["model_bytes"] + slack, r
