"""Run benchmark suites, one fresh process per configuration, and collect the results.

    python -m benchmarks.run SUITE [SUITE ...] [--device cpu|mps|cuda] [--dtype D] [--repeats N]

Each configuration runs as ``python -m benchmarks.<module> --config JSON`` in its own
process (a warm allocator reads low); the ``RESULT`` lines are gathered into
benchmarks/results/<suite>-<device>.json. ``python -m benchmarks.report`` then writes the
tables and plots.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
R = {"hidden": 2048, "layers": 24, "heads": 32, "groups": 8, "ffn": 5632}

# suite -> (module, configs, default repeats)
SUITES: dict[str, tuple[str, list[dict[str, Any]], int]] = {
    "backbone": ("backbone_decode", [{"new_tokens": 2048, "window": 128}], 3),
    "superres": ("superres_pass", [{"S": s} for s in (512, 1024, 2048, 4096, 8192)], 3),
    "decoder": ("decoder_bench", [{"n_filters": 24, "frames": 431, "mode": "rtf"},
                                  {"n_filters": 192, "frames": 22, "mode": "rtf"}], 2),
    "decoder_mem": ("decoder_bench", [{"n_filters": 192, "frames": f, "mode": "mem"} for f in (8, 16, 32)]
                    + [{"n_filters": 24, "frames": 1920, "mode": "mem"},
                       {"n_filters": 24, "frames": 1920, "mode": "mem", "sub": 240}], 1),
    "decoder_real": ("decoder_bench", [{"n_filters": 192, "frames": f, "mode": "mem"} for f in (64, 128, 384)], 1),
    "decoder_long": ("decoder_bench", [{"n_filters": 192, "frames": 768, "mode": "mem"}], 1),
    "decoder_fix": ("decoder_bench", [{"n_filters": 192, "frames": 384, "mode": "mem", "sub": 128, "halo": 16}], 1),
    "e2e": ("end_to_end", [{"minutes": 2}], 1),
    "batch": ("batch", [{"variations": n, "new_tokens": 2048, "hidden": 256, "layers": 4, "threads": t}
                        for t in (1, 0) for n in (1, 2, 4)], 5),
    "real_load": ("load_peak", [{"kind": k, "dtype": d, "loader": ld} for k in ("backbone", "superres")
                                for d in ("float16", "float32") for ld in ("before", "engine")], 1),
    "ceiling": ("ceiling", [{"stage": "backbone", "position": 1024}, {"stage": "backbone", "position": 16384},
                            {"stage": "superres"}, {"stage": "decoder"}], 3),
    "ceiling_1thread": ("ceiling", [{"stage": s, "threads": 1} for s in ("backbone", "superres", "decoder")], 3),
    "real": ("real_width", [{"stage": "backbone", "minutes": 2, "dtype": "float32"},
                            {"stage": "superres", "minutes": 2, "layers_run": 2, "dtype": "float32"}], 1),
}


def run_one(module: str, config: dict[str, Any], device: str, dtype: str, repeats: int,
            timeout: float) -> dict[str, Any]:
    dtype = config.get("dtype", dtype)  # a configuration may pin its dtype
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--config", json.dumps(config), "--device", device,
           "--dtype", dtype, "--repeats", str(repeats)]
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["wall_s"] = time.perf_counter() - t
            print("  ->", {k: v for k, v in result.items() if not isinstance(v, list)}, flush=True)
            return result
    raise RuntimeError(f"{module} {config} gave no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("suites", nargs="+", choices=sorted(SUITES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default: float32 on cpu, float16 on mps, bfloat16 on cuda")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args(argv)
    dtype = args.dtype or {"cpu": "float32", "mps": "float16"}.get(args.device.split(":")[0], "bfloat16")
    RESULTS.mkdir(exist_ok=True)
    for suite in args.suites:
        module, configs, reps = SUITES[suite]
        out = [run_one(module, c, args.device, dtype, args.repeats or reps, args.timeout) for c in configs]
        path = RESULTS / f"{suite}-{args.device.split(':')[0]}.json"
        path.write_text(json.dumps(out, indent=1))
        print("wrote", path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
