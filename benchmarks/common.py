"""Shared helpers for the benchmarks: peak memory, timing, result output.

Every benchmark runs ONE configuration per process (``python -m benchmarks.<x> --config
JSON``) and prints one ``RESULT {json}`` line; ``benchmarks.run`` spawns and collects them.
Peak host memory is the kernel's high-water mark of resident memory (VmHWM in
/proc/self/status, the same number as getrusage ru_maxrss); on Linux it can be reset
between phases (writing 5 to /proc/self/clear_refs), so one process can report the peak
of each stage. On CUDA the allocator's max_memory_allocated is reported as well; on MPS
the driver's allocated memory (sampled, not a true peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable

MIB = 1024**2
GIB = 1024**3


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss() -> int:
    """High-water mark of resident memory, bytes (VmHWM on Linux, ru_maxrss elsewhere)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # macOS reports bytes, Linux KiB


def current_rss() -> int:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_rss()


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS (Linux ≥ 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def device_reset_peak(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def device_peak(device: str) -> int | None:
    """Accelerator-side peak bytes: CUDA max allocated; MPS driver-allocated now; None on CPU."""
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    if device.startswith("mps"):
        torch.mps.synchronize()
        return int(torch.mps.driver_allocated_memory())
    return None


def sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device.startswith("mps"):
        torch.mps.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--config", required=True, help="JSON object with this run's settings")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


def setup(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return json.loads(args.config)


def emit(result: dict[str, Any]) -> None:
    result.setdefault("pid", os.getpid())
    result.setdefault("loadavg_1min", os.getloadavg()[0])
    print("RESULT " + json.dumps(result), flush=True)


def torch_dtype(name: str) -> Any:
    import torch
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
