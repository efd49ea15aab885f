"""(d) The whole pipeline (engine.pipeline.Pipeline, from files) on a 2-minute-equivalent
song at reduced width: stage timings and the memory peak of each stage.

A reduced-width checkpoint is written in the published six-file format (random weights;
the backbone never samples EOS, so it makes exactly ``max_tokens`` tokens = 2 minutes of
music). Config keys: minutes (2), hidden, layers, heads, groups, n_filters, max_tokens.
The resident-memory high-water mark is reset at every Stage event, so each stage's peak
is measured on its own, in this one fresh process.
"""

from __future__ import annotations

from engine.host_memory import tune_host_memory

tune_host_memory()  # as `khala generate` does, before torch is imported

import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from benchmarks.common import emit, parser, peak_rss, reset_peak, setup  # noqa: E402
from benchmarks.models import random_state, transformer_config  # noqa: E402

LYRICS = "\n".join(["[verse]", "Walking down the empty road tonight", "Counting every light that passes by",
                    "[chorus]", "Hold on, hold on, the morning's coming soon",
                    "Sing it loud beneath the silver moon"] * 4)


def write_checkpoint(folder: Path, c: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import save_file

    import engine.testing.tiny_decoder as td
    from engine.model.config import megatron_args_for
    from engine.testing.tiny import bundled_llama3_tokenizer
    cfgs = {}
    for kind in ("backbone", "superres"):
        cfg = transformer_config(kind, c.get("hidden", 256), c.get("layers", 4), c.get("heads", 4),
                                 c.get("groups", 2))
        save_file(random_state(cfg, torch.bfloat16), str(folder / f"khala_{kind}.safetensors"))
        (folder / f"{kind}_megatron_args.json").write_text(json.dumps(megatron_args_for(cfg)))
        cfgs[kind] = cfg
    nf = c.get("n_filters", 24)
    original = td.tiny_decoder_config
    td.tiny_decoder_config = lambda: {  # the tiny writer, at a chosen width
        "encoder": {"input_channel": 2, "n_filters": 2, "strides": [4, 8, 8, 8], "d_latent": 128},
        "decoder": {"d_latent": 128, "n_filters": nf, "rates": [8, 8, 8, 4], "out_channel": 2},
        "quantizer": {"dim": 128, "codebook_size": 1024, "num_quantizers": 64}}
    try:
        td.write_tiny_decoder(folder, seed=2)
    finally:
        td.tiny_decoder_config = original
    shutil.copyfile(bundled_llama3_tokenizer(), folder / "tokenizer.json")
    return cfgs


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    c = setup(args)
    from engine.stages.decoder_config import load_decoder_config
    from engine.memory import estimate_peak_bytes
    from engine.pipeline import Pipeline
    from engine.request import SongRequest
    from engine.events import Song, Stage
    minutes = c.get("minutes", 2)
    folder = Path(tempfile.mkdtemp(prefix="khala-bench-"))
    try:
        cfgs = write_checkpoint(folder, c)
        request = SongRequest(tags="pop, female vocals, piano, upbeat", lyrics=LYRICS, minutes=minutes, seed=7,
                              max_tokens=c.get("max_tokens", 2 * 1292 * minutes))
        pipe = Pipeline(folder, device=args.device, dtype=args.dtype)
        stages: dict[str, dict[str, float]] = {}
        current, t0 = "start", time.perf_counter()
        reset_peak()
        song = None
        for event in pipe.generate(request):
            if isinstance(event, (Stage, Song)):
                now = time.perf_counter()
                stages.setdefault(current, {"seconds": 0.0, "peak": 0})
                stages[current]["seconds"] += now - t0
                stages[current]["peak"] = max(stages[current]["peak"], peak_rss())
                current = event.name if isinstance(event, Stage) else "write"
                t0 = now
                reset_peak()
            if isinstance(event, Song):
                song = event
        meta = song.metadata
        tok = meta["tokens"]
        est = estimate_peak_bytes(request, device=args.device, dtype=args.dtype, backbone_cfg=cfgs["backbone"],
                                  superres_cfg=cfgs["superres"],
                                  decoder_cfg=load_decoder_config(folder / "decoder_config.yaml"),
                                  prompt_tokens=tok["backbone_prompt"], superres_prompt_tokens=tok["superres_prompt"],
                                  frames=tok["audio_frames"])
        estimate = {k: s.total + est.overhead for k, s in est.stages.items()}
        emit({"bench": "end_to_end", "config": c, "device": args.device, "dtype": args.dtype, "stages": stages,
              "tokens": tok, "song_seconds": song.seconds, "timings": meta["timings_s"],
              "estimate": estimate, "estimate_peak": est.peak, "measured_peak": max(s["peak"] for s in stages.values()),
              "threads": torch.get_num_threads()})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
