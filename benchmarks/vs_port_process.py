"""The whole `khala generate` process against the whole port-style process on the same work.

    nice -n 5 python -m benchmarks.vs_port_process run [--repeats 3] [--tokens 2048]
    python -m benchmarks.vs_port_process report

One reduced-width checkpoint (hidden 256 × 4 layers, 4 heads / 2 KV groups, real vocabularies,
decoder n_filters 24; random weights that never sample EOS) is written once; then, alternating,
``python -m engine.cli generate`` (ours) and ``python -m benchmarks.port_process`` (the baseline)
each make the same song (same prompt, seed, ``--max-tokens``) in a fresh process. Measured per
process: wall time from spawn to exit, and its peak resident memory (``ru_maxrss`` of that child,
from ``os.wait4``). The two songs are compared sample by sample: the same tokens give the same audio.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.end_to_end import LYRICS, write_checkpoint

RESULTS = Path(__file__).parent / "results"
WIDTH = {"hidden": 256, "layers": 4, "heads": 4, "groups": 2, "n_filters": 24}
TAGS = "pop, female vocals, piano, upbeat"


def command(impl: str, weights: Path, out: Path, tokens: int) -> list[str]:
    common = ["--weights", str(weights), "--tags", TAGS, "--lyrics", LYRICS.replace("\n", "\\n"),
              "--max-tokens", str(tokens), "--seed", "7", "--out", str(out), "--codes-out", str(out.with_suffix(".npy"))]
    if impl == "ours":
        return [sys.executable, "-m", "engine.cli", "generate", *common, "--device", "cpu", "--dtype", "float32",
                "--quiet"]
    return [sys.executable, "-m", "benchmarks.port_process", *common]


def run_process(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (bytes) of one child process, spawn to exit."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[2]} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "sys_s": usage.ru_stime,
            "peak": usage.ru_maxrss * 1024, "stderr": err[-500:], "stdout": out[-500:]}


def run_all(repeats: int, tokens: int) -> None:
    import numpy as np
    import soundfile as sf
    folder = Path(tempfile.mkdtemp(prefix="khala-vsport-", dir="/tmp"))
    t0, load0 = time.perf_counter(), os.getloadavg()
    try:
        (folder / "w").mkdir()
        write_checkpoint(folder / "w", WIDTH)
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "port": []}
        for r in range(repeats):
            for impl in (("ours", "port") if r % 2 == 0 else ("port", "ours")):
                out = folder / f"{impl}.wav"
                res = run_process(command(impl, folder / "w", out, tokens))
                res["loadavg_1min"] = os.getloadavg()[0]
                if impl == "ours":
                    res["timings"] = json.loads(out.with_suffix(".json").read_text())["timings_s"]
                runs[impl].append(res)
                print(impl, f"{res['seconds']:.1f} s, peak {res['peak'] / 2**20:.0f} MB", flush=True)
        a, b = sf.read(folder / "ours.wav")[0], sf.read(folder / "port.wav")[0]
        ca, cb = np.load(folder / "ours.npy"), np.load(folder / "port.npy")
        same = {"samples": [len(a), len(b)], "codes_shape": list(ca.shape),
                "backbone_frames_equal": int(np.cumprod((ca[:2] == cb[:2]).all(axis=0)).sum()) if ca.shape == cb.shape else 0}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    meta = {"width": WIDTH, "tokens": tokens, "repeats": repeats, "wall_s": time.perf_counter() - t0,
            "loadavg_start": load0, "loadavg_end": os.getloadavg(), "nproc": os.cpu_count(), "same_audio": same}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vs_port_process-cpu.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))


def report() -> str:
    data = json.loads((RESULTS / "vs_port_process-cpu.json").read_text())
    meta, runs = data["meta"], data["runs"]
    same = meta["same_audio"]
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_s"] for r in v) for k, v in runs.items()}
    peak = {k: statistics.median(r["peak"] for r in v) for k, v in runs.items()}
    stages = {s: statistics.median(r["timings"].get(s, 0) for r in runs["ours"]) for s in ("backbone", "superres", "decode")}
    loads = [r["loadavg_1min"] for v in runs.values() for r in v]
    w = meta["width"]
    md = ["# Whole process: `khala generate` vs the port-style process (CPU float32)", "",
          f"A {meta['tokens']}-token song ({meta['tokens'] // 2} frames), hidden {w['hidden']} × {w['layers']} layers, "
          f"{w['heads']} heads / {w['groups']} KV groups, real vocabularies, decoder n_filters {w['n_filters']}; "
          f"each run a fresh process, alternating, median of {meta['repeats']}; load average (1 min) "
          f"{min(loads):.1f}–{max(loads):.1f} on {meta['nproc']} shared cores. Same work: {same['samples'][0]} "
          f"samples from both; the backbone codes are equal for the first {same['backbone_frames_equal']} of "
          f"{same['codes_shape'][1]} frames (then a sample near a top-k boundary flips on float rounding: the "
          "port's attention sums in another order, and at temperature 1 the two songs part; the work per token "
          "is the same).", "",
          "| | wall s (median) | runs s | CPU s (median) | peak RSS MB (median) | runs MB |",
          "|---|---|---|---|---|---|"]
    for k, name in (("ours", "`khala generate`"), ("port", "port-style (`benchmarks/port_process.py`)")):
        secs = ", ".join(f"{r['seconds']:.1f}" for r in runs[k])
        mbs = ", ".join(f"{r['peak'] / 2**20:.0f}" for r in runs[k])
        md.append(f"| {name} | {med[k]:.1f} | {secs} | {cpu[k]:.1f} | {peak[k] / 2**20:.0f} | {mbs} |")
    md += ["", f"**Port-style / ours: {med['port'] / med['ours']:.2f}× the wall time ({cpu['port'] / cpu['ours']:.2f}× "
               f"the CPU time); peak {peak['ours'] / 2**20:.0f} MB "
               f"vs {peak['port'] / 2**20:.0f} MB ({peak['ours'] / peak['port']:.2f}×).**", "",
           "Ours, stage medians (sidecar `timings_s`): " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
           + ". Last port-style run: " + runs["port"][-1]["stderr"].strip().splitlines()[-1], ""]
    (RESULTS / "vs_port_process-cpu.md").write_text("\n".join(md))
    return "\n".join(md)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] == "run":
        run_all(int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 3,
                int(argv[argv.index("--tokens") + 1]) if "--tokens" in argv else 2048)
        print(report())
    elif argv and argv[0] == "report":
        print(report())
    else:
        sys.exit(__doc__)
