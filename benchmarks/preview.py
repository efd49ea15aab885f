"""What rough previews cost the backbone (issue 15): token rate with previews on and off.

One measurement per process (a fresh process per run, on and off alternating), on the
end-to-end benchmark's checkpoint (hidden 256 × 4 layers, decoder n_filters 24, random
weights that never sample EOS, so every run writes exactly ``max_tokens``), through
``engine.pipeline.Pipeline.generate`` itself; the run stops when the backbone stage ends.

Per run: the token rate while the backbone writes (tokens / time from Stage(backbone) to its
last Progress, previews decoded meanwhile included), the whole stage (to Stage(load_superres):
the final catch-up of what the budget held back included), and the previews. Each rate is
also taken over the process's CPU time (``time.process_time``; one torch thread, so CPU
time is the work done), which other processes' load on a shared machine does not inflate,
and the seconds spent in preview decodes while writing are timed around
``engine.stages.preview.decode_coarse``.

    python -m benchmarks.preview --drive [--runs 3] [--minutes 2] [--threads 1]   # results/preview-<device>.{json,md}
    python -m benchmarks.preview --config '{"minutes": 2, "preview_every": 10}'   # one run
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit, median, parser, setup

RESULTS = Path(__file__).parent / "results"


def measure(c: dict[str, Any], device: str, dtype: str) -> dict[str, Any]:
    from benchmarks.end_to_end import LYRICS, write_checkpoint
    from engine.events import BACKBONE, LOAD_SUPERRES, Preview, Progress, Stage
    from engine.pipeline import Pipeline
    from engine.request import SongRequest
    import engine.stages.preview as preview_module
    from engine.stages.preview import PREVIEW_BUDGET

    decodes: list[tuple[float, float]] = []  # (start, seconds) of each preview decode
    real_decode = preview_module.decode_coarse

    def timed_decode(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_decode(*a, **k)
        finally:
            decodes.append((t0, time.perf_counter() - t0))

    preview_module.decode_coarse = timed_decode

    minutes = c.get("minutes", 2)
    folder = Path(tempfile.mkdtemp(prefix="khala-bench-"))
    try:
        write_checkpoint(folder, c)
        request = SongRequest(tags="pop, female vocals, piano, upbeat", lyrics=LYRICS, minutes=minutes, seed=7,
                              max_tokens=c.get("max_tokens", 2 * 1292 * minutes))
        pipe = Pipeline(folder, device=device, dtype=dtype)
        events = pipe.generate(request, preview_every=c.get("preview_every"))
        start = last = end = None
        cpu = {}
        tokens, previews, during = 0, [], 0
        for event in events:
            now = time.perf_counter()
            if isinstance(event, Stage) and event.name == BACKBONE:
                start, cpu["start"] = now, time.process_time()
            elif isinstance(event, Progress) and event.stage == BACKBONE:
                last, tokens, cpu["last"] = now, event.done, time.process_time()
            elif isinstance(event, Preview):
                previews.append({"at_s": round(now - start, 3), "frames": event.frames})
                during = event.frames if last is not None and tokens < request.max_tokens else during
            elif isinstance(event, Stage) and event.name == LOAD_SUPERRES:
                end, cpu["end"] = now, time.process_time()
                break
        events.close()
        write_s, stage_s = last - start, end - start
        write_cpu, stage_cpu = cpu["last"] - cpu["start"], cpu["end"] - cpu["start"]
        decoding = sum(s for t0, s in decodes if start <= t0 < last)
        return {"tokens": tokens, "write_s": write_s, "stage_s": stage_s, "tokens_per_s": tokens / write_s,
                "stage_tokens_per_s": tokens / stage_s, "write_cpu_s": write_cpu, "stage_cpu_s": stage_cpu,
                "tokens_per_cpu_s": tokens / write_cpu, "stage_tokens_per_cpu_s": tokens / stage_cpu,
                "preview_decode_s_while_writing": decoding, "preview_share_while_writing": decoding / write_s,
                "previews": previews, "frames_previewed_while_writing": during, "frames": tokens // 2,
                "budget": PREVIEW_BUDGET}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def drive(runs: int, minutes: int, device: str, dtype: str, every: float, threads: int) -> None:
    configs = [{"minutes": minutes, "preview_every": None}, {"minutes": minutes, "preview_every": every}]
    results: list[dict[str, Any]] = []
    for i in range(runs):
        for c in configs:  # alternating, so load from other processes falls on both alike
            cmd = [sys.executable, "-m", "benchmarks.preview", "--config", json.dumps(c), "--device", device,
                   "--dtype", dtype, "--threads", str(threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"{c} gave no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            results.append(json.loads(line[len("RESULT "):]))
            r = results[-1]
            print(f"run {i + 1} previews={c['preview_every']}: {r['tokens_per_s']:.1f} tok/s writing "
                  f"({r['tokens_per_cpu_s']:.1f} per CPU s), {r['stage_tokens_per_s']:.1f} over the stage, "
                  f"previews {r['preview_share_while_writing']:.1%} of writing, load {r['loadavg_1min']:.1f}",
                  flush=True)
    RESULTS.mkdir(exist_ok=True)
    name = device.split(":")[0]
    (RESULTS / f"preview-{name}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"preview-{name}.md").write_text(report(results, device, dtype))
    print((RESULTS / f"preview-{name}.md").read_text())


def report(results: list[dict[str, Any]], device: str, dtype: str) -> str:
    off = [r for r in results if not r["config"].get("preview_every")]
    on = [r for r in results if r["config"].get("preview_every")]

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in rows])

    write_ratio = med(on, "tokens_per_s") / med(off, "tokens_per_s")
    stage_ratio = med(on, "stage_tokens_per_s") / med(off, "stage_tokens_per_s")
    cpu_ratio = med(on, "tokens_per_cpu_s") / med(off, "tokens_per_cpu_s")
    cpu_stage_ratio = med(on, "stage_tokens_per_cpu_s") / med(off, "stage_tokens_per_cpu_s")
    every = on[0]["config"]["preview_every"]
    lines = [
        f"# Rough previews: backbone cost ({device}, {dtype})",
        "",
        f"`python -m benchmarks.preview --drive --runs {len(on)}`: hidden 256 × 4 layers, decoder n_filters 24, "
        f"{on[0]['threads']} torch thread(s), "
        f"{on[0]['tokens']} tokens ({on[0]['frames']} frames), previews every {every:g} s, "
        f"PREVIEW_BUDGET {on[0]['budget']:g}; a fresh process per run, on/off alternating; medians of "
        f"{len(on)} runs each.",
        "",
        "| | off | on | on / off |",
        "|---|---|---|---|",
        f"| tokens/s while writing | {med(off, 'tokens_per_s'):.1f} | {med(on, 'tokens_per_s'):.1f} | "
        f"**{write_ratio:.1%}** |",
        f"| tokens/s over the whole stage (final catch-up included) | {med(off, 'stage_tokens_per_s'):.1f} | "
        f"{med(on, 'stage_tokens_per_s'):.1f} | {stage_ratio:.1%} |",
        f"| tokens per CPU second while writing | {med(off, 'tokens_per_cpu_s'):.1f} | "
        f"{med(on, 'tokens_per_cpu_s'):.1f} | **{cpu_ratio:.1%}** |",
        f"| tokens per CPU second over the whole stage | {med(off, 'stage_tokens_per_cpu_s'):.1f} | "
        f"{med(on, 'stage_tokens_per_cpu_s'):.1f} | {cpu_stage_ratio:.1%} |",
        f"| share of the writing time spent in preview decodes | | "
        f"{med(on, 'preview_share_while_writing'):.1%} (max {max(r['preview_share_while_writing'] for r in on):.1%}) | |",
        f"| stage seconds | {med(off, 'stage_s'):.1f} | {med(on, 'stage_s'):.1f} | |",
        f"| previews (frames heard before the last token) | | {median([len(r['previews']) for r in on]):.0f} "
        f"({median([r['frames_previewed_while_writing'] for r in on]):.0f} of {on[0]['frames']}) | |",
        "",
        "Load average (1 min) per run: " + ", ".join(f"{r['loadavg_1min']:.1f}" for r in results) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if "--drive" in argv:
        p = argparse.ArgumentParser()
        p.add_argument("--drive", action="store_true")
        p.add_argument("--runs", type=int, default=3)
        p.add_argument("--minutes", type=int, default=2)
        p.add_argument("--every", type=float, default=10.0)
        p.add_argument("--device", default="cpu")
        p.add_argument("--dtype", default="float32")
        p.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads per run (1: on a shared machine two threads spin against the load)")
        a = p.parse_args(argv)
        drive(a.runs, a.minutes, a.device, a.dtype, a.every, a.threads)
        return
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    import torch

    result = measure(c, args.device, args.dtype)
    emit({"bench": "preview", "config": c, "device": args.device, "dtype": args.dtype, **result,
          "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
