"""Reference for load_probe.py: the common way to load, ``safetensors.torch.load_file`` and then
``load_state_dict`` into a model built in the file's dtype (a copy). Same JSON fields."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from common import status_bytes  # noqa: E402
from wan_core import WanDiT, config_from_state_dict  # noqa: E402

before = status_bytes("VmRSS")
t0 = time.perf_counter()
sd = load_file(sys.argv[1])
torch.set_default_dtype(next(iter(sd.values())).dtype)
model = WanDiT(config_from_state_dict({k: tuple(v.shape) for k, v in sd.items()}))
model.load_state_dict(sd)
del sd
seconds = time.perf_counter() - t0
print(json.dumps({"model_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
                  "peak_growth": status_bytes("VmHWM") - before, "seconds": seconds}))
