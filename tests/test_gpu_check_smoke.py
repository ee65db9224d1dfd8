"""The GPU acceptance run's script stays working: ``benchmarks/gpu_check.py --smoke`` on the CPU with
tiny stand-ins, as on a GPU machine without PyAV (the import-only stand-in the lent machine needs).
It measures nothing here; what is checked is that every row group runs to its end and writes its
cases with thresholds and what the host ran. (The ``compile`` group is left out: inductor's C++
build takes about 40 s on these two cores; it ran by hand, see the README.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_smoke_runs_every_group(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--smoke",
                          "--out", str(out), "--models", str(tmp_path / "models"),
                          "--only", "t2v_dynamic", "t2v_classic", "a14b", "decode"],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "WAN_GPU_CHECK_NO_PYAV": "1"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    cases = [r["case"] for r in rows]
    for expected in ("DynamicVRAM: native", "DynamicVRAM: ours", "fp32 regions cost", "classic patcher: ours",
                     "A14B GGUF Q4_K pair + LoRA each, loaded fully", "A14B pair, budget", "GGUF decode of one",
                     "after the 5B DiT: ours", "after the 5B DiT: core VAEDecode", "out of memory forced"):
        assert sum(expected in c for c in cases) >= 1, (expected, cases)
    for r in rows:
        assert r["threshold"] and r["pass"] is None  # a smoke run passes no verdicts
        assert r["host"]["pyav"] == "import-only stand-in" and r["host"]["core_patcher"]
    oom = next(r for r in rows if "out of memory forced" in r["case"])
    assert oom["error"] is None  # the tiled fallback ran to its end
    classic = next(r for r in rows if "classic patcher: ours" in r["case"])
    assert classic["latent_diff_vs_native"] < 1e-4  # fp32 on the CPU: ours equals native
    table = (out / "table.md").read_text()
    assert "SMOKE" in table and "FAILED" not in table
