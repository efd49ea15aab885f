"""Model load peak at real width (SPEC §3), CPU: the whole-process resident high-water mark
(VmHWM) of a fresh process that loads a real-size random bf16 file in the published format.

    python -m benchmarks.run real_load        # or one: --config '{"kind": "superres", "dtype": "float16"}'

Config keys: kind ("backbone" | "superres"), dtype (target: "float16" | "float32" | "bfloat16"),
loader ("engine": engine.model.loader.load_transformer, plain reads in 16 MiB slices; "before":
benchmarks/loader_before.py, the mapped-file loader the engine used before issue 12). Each
configuration: one process writes the file into a temporary folder (~3.2 GB backbone, ~3.8 GB
super-res), a second, fresh process loads it and reports, then the folder is deleted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit, parser


def write(kind: str, folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from benchmarks.models import REAL, random_state, transformer_config
    from engine.model.config import megatron_args_for
    cfg = transformer_config(kind, **REAL)
    save_file(random_state(cfg, torch.bfloat16), str(folder / f"khala_{kind}.safetensors"))
    (folder / f"{kind}_megatron_args.json").write_text(json.dumps(megatron_args_for(cfg)))


def load(kind: str, folder: Path, dtype: str, loader: str) -> dict:
    from benchmarks.common import current_rss, peak_rss
    import torch
    if loader == "engine":
        from engine.model.loader import load_transformer as fn
    else:
        from benchmarks.loader_before import load_transformer_mapped as fn
    st, js = folder / f"khala_{kind}.safetensors", folder / f"{kind}_megatron_args.json"
    rss_start = current_rss()
    t = time.perf_counter()
    model = fn(st, js, "cpu", getattr(torch, dtype))
    load_s = time.perf_counter() - t
    return {"rss_start": rss_start, "load_s": load_s, "peak": peak_rss(), "rss_loaded": current_rss(),
            "weights": sum(p.numel() * p.element_size() for p in model.parameters()), "file_bytes": st.stat().st_size,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--write":
        return write(argv[1], Path(argv[2]))
    if argv and argv[0] == "--load":
        print("LOAD " + json.dumps(load(argv[1], Path(argv[2]), argv[3], argv[4])), flush=True)
        return None
    args = parser(__doc__).parse_args(argv)
    c = json.loads(args.config)
    kind, loader = c.get("kind", "superres"), c.get("loader", "engine")
    folder = Path(tempfile.mkdtemp(prefix="khala-load-", dir="/tmp"))
    try:
        me = [sys.executable, "-m", "benchmarks.load_peak"]
        subprocess.run(me + ["--write", kind, str(folder)], check=True)
        out = subprocess.run(me + ["--load", kind, str(folder), args.dtype, loader], check=True,
                             capture_output=True, text=True).stdout
        res = json.loads(next(x for x in out.splitlines() if x.startswith("LOAD "))[5:])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    from engine.memory import REAL_BACKBONE, REAL_SUPERRES, OVERHEAD, transformer_load
    shape = REAL_SUPERRES if kind == "superres" else REAL_BACKBONE
    b = {"float32": 4, "float16": 2, "bfloat16": 2}[args.dtype]
    res["estimate"] = shape.params * b + transformer_load(shape) + OVERHEAD["cpu"]
    emit({"bench": "load_peak", "config": c, "device": "cpu", "dtype": args.dtype, **res})


if __name__ == "__main__":
    main()
