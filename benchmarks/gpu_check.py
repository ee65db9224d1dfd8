"""GPU acceptance run: our DiT, GGUF experts and VAE against ComfyUI's native ones on a real GPU,
under the host's default flags, with ComfyUI driven in process (no server, front end or PyAV).

Rows, in order (each group in its own process, see ``gpu_rows.py``):

1. ``t2v_dynamic``: Wan2.1 1.3B bf16 at 832x480, 33 frames, 4 UniPC steps with CFG through core
   KSampler, ours (Wan Load DiT) against native (UNETLoader) under DynamicVRAM: warm time per step,
   CUDA peak, latent difference; then 81 frames, 2 steps: what our fp32 regions cost.
2. ``t2v_classic``: the same at 33 frames with the classic patcher (``--disable-dynamic-vram``).
3. ``a14b``: an A14B-width GGUF Q4_K expert pair (4 blocks each) with a LoRA per expert through Wan
   Sampler, loaded fully and under a budget that makes the host offload part of each expert (the
   latents must match; no pinned weight on the GGUF map); one FFN weight's decode peak against the
   estimate the host budgets.
4. ``decode``: a Wan2.2 decode of 121 frames at 1280x704 after the 5B DiT sampled, ours and core
   VAEDecode (peaks against the estimates); ours again with an out-of-memory error forced on the
   first attempt, whose memory stays taken unless the attempt is freed before the tiled retry.
5. ``compile``: the 1.3B under core TorchCompileModel.

Every case is written to ``OUT/rows.jsonl`` as it is measured and to ``OUT/table.md`` at the end
of each group, with its PASS / FAIL threshold and what the host ran (DynamicVRAM, patcher, attention,
storage and compute dtypes). ``--budget`` seconds bound the whole run: a group that would not fit
its usual time in what is left is skipped and reported as such.

    bash scripts/gpu_check.sh            # on a CUDA machine; see the README for the lent GPU machine
    bash scripts/gpu_check.sh --smoke    # the same script on the CPU with tiny stand-ins (no numbers)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (row group, seconds it takes on an H100 including its process start and file writing, timeout)
GROUPS = [("t2v_dynamic", 60, 150), ("t2v_classic", 40, 100), ("a14b", 40, 100), ("decode", 150, 200),
          ("compile", 110, 180)]


def table(rows: list) -> str:
    lines = ["| result | case | measured | threshold |", "|---|---|---|---|"]
    for r in rows:
        skip = {"case", "threshold", "pass", "host", "smoke"}
        measured = ", ".join(f"{k} {v}" for k, v in r.items() if k not in skip and v is not None)
        verdict = "SMOKE" if r.get("smoke") else {True: "PASS", False: "FAIL", None: "-"}[r.get("pass")]
        lines.append(f"| {verdict} | {r['case']} | {measured} | {r['threshold']} |")
    return "\n".join(lines)


def read_rows(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder for rows.jsonl / table.md")
    ap.add_argument("--models", default="/tmp/wan_gpu_models", help="folder for the written model files (kept)")
    ap.add_argument("--budget", type=float, default=360,
                    help="seconds for the whole run (6 minutes: with a lent machine's start, under 8)")
    ap.add_argument("--only", nargs="*", choices=[g for g, *_ in GROUPS], help="run only these groups")
    ap.add_argument("--smoke", action="store_true", help="on the CPU with tiny stand-ins: checks the script")
    args, extra = ap.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.jsonl"
    rows_file.unlink(missing_ok=True)
    start = time.time()
    groups = [g for g in GROUPS if not args.only or g[0] in args.only]
    status = []
    for name, usual, timeout in groups:
        left = args.budget - (time.time() - start)
        if not args.smoke and left < usual:
            status.append(f"{name}: skipped, {left:.0f} s left of the budget (it takes about {usual} s)")
            print(status[-1], flush=True)
            continue
        cmd = [sys.executable, str(HERE / "gpu_rows.py"), name, "--models", args.models, "--out", str(rows_file),
               *(["--smoke", "--width", "64", "--height", "64", "--frames", "5", "--long-frames", "9",
                  "--decode-size", "32", "32", "5"] if args.smoke else []), *extra]
        t = time.time()
        log = out / f"{name}.log"
        with open(log, "w") as f:
            try:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=min(timeout, max(30, left)),
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        status.append(f"{name}: {'ok' if rc == 0 else f'FAILED ({rc}), see {log.name}'} in {time.time() - t:.0f} s")
        print(status[-1], flush=True)
        if rc != 0:
            print(log.read_text()[-3000:], flush=True)
        rows = read_rows(rows_file)
        for r in rows:
            r["smoke"] = args.smoke
        (out / "table.md").write_text(table(rows) + "\n\n" + "\n".join(status) + "\n")
    rows = read_rows(rows_file)
    for r in rows:
        r["smoke"] = args.smoke
    host = rows[0]["host"] if rows else {}
    print(f"\nGPU acceptance run ({'SMOKE on the CPU: stand-ins, not a measurement' if args.smoke else 'measured'}): "
          f"{json.dumps(host)}; total {time.time() - start:.0f} s")
    report = table(rows) + "\n\n" + "\n".join(status) + f"\n\ntotal {time.time() - start:.0f} s\n"
    (out / "table.md").write_text(report)
    print(report)
    failed = [r["case"] for r in rows if r.get("pass") is False]
    broken = [s for s in status if "FAILED" in s]
    sys.exit(1 if broken or failed else 0)


if __name__ == "__main__":
    main()
