"""Shared helpers for the benchmark scripts: timing medians, peak-memory probes, tables."""

from __future__ import annotations

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)


def status_bytes(field: str, pid="self") -> int:
    """A memory field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes; this process by default."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak() -> int:
    """Return freed heap to the OS, reset the RSS high-water mark (clear_refs 5); returns RSS."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_bytes("VmRSS")


def measure(fn, runs: int = 3, warmup: int = 0, device=None, keep: bool = False):
    """(median seconds, peak memory growth bytes) of ``fn()`` over ``runs`` runs: RSS on the CPU,
    allocated device memory on CUDA.  ``keep``: also return the last run's result (each run's
    result is held until the next run starts, so it counts in that run's peak)."""
    import torch

    cuda = device is not None and torch.device(device).type == "cuda"
    with torch.no_grad():
        for _ in range(warmup):
            fn()
    times, peaks, result = [], [], None
    for _ in range(runs):
        result = None
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = reset_peak()
        t0 = time.perf_counter()
        with torch.no_grad():
            result = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        peaks.append((torch.cuda.max_memory_allocated() if cuda else status_bytes("VmHWM")) - base)
        if not keep:
            result = None
    if keep:
        return statistics.median(times), max(peaks), result
    return statistics.median(times), max(peaks)


def table(rows, headers) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
