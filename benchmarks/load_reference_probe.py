"""Reference for load_probe.py: safetensors.torch.load_file of the same file, same JSON fields."""

import json
import sys
import time

from safetensors.torch import load_file

from load_probe import status_bytes

before = status_bytes("VmRSS")
t0 = time.perf_counter()
sd = load_file(sys.argv[1])
seconds = time.perf_counter() - t0
print(json.dumps({"model_bytes": sum(t.numel() * t.element_size() for t in sd.values()),
                  "peak_growth": status_bytes("VmHWM") - before, "seconds": seconds}))
