"""``khala generate``: write a song (and its variations) to audio files with sidecars."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import (AUDIO_SUFFIXES, add_prompt_flags, add_weights_flag, check_output_path,
                               request_from_args)
from engine.request import SongRequest


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="write a song to an audio file")
    add_weights_flag(gen)
    add_prompt_flags(gen)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=80)
    gen.add_argument("--top-k-sr", type=int, default=10, help="super-resolution top-k (upstream: 10)")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--variations", type=int, default=1)
    gen.add_argument("--max-tokens", type=int, default=None, help="cap on backbone tokens (default 23552)")
    gen.add_argument("--device", default=None, help="auto, mps, cuda or cpu (env KHALA_DEVICE)")
    gen.add_argument("--dtype", default=None, help="auto, float32, float16 or bfloat16 (env KHALA_DTYPE)")
    gen.add_argument("--keep-loaded", action="store_true", help="keep every model in memory (faster, larger)")
    gen.add_argument("--out", type=Path, required=True, metavar="FILE.{wav,flac,mp3}")
    gen.add_argument("--codes-out", type=Path, default=None, metavar="FILE.npy")
    gen.add_argument("--quiet", action="store_true")
    gen.set_defaults(handler=run)


def variation_path(out: Path, index: int) -> Path:
    return out if index == 0 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")


def sidecar_path(audio_path: Path) -> Path:
    return audio_path.with_suffix(".json")


def run(args: argparse.Namespace) -> int:
    from engine.cli.progress_bar import ProgressBar
    from engine.pipeline import Pipeline

    request = request_from_args(args)
    request.validate()
    check_output_path(args.out, AUDIO_SUFFIXES)
    if args.codes_out is not None:
        check_output_path(args.codes_out, (".npy",))
    pipeline = Pipeline(args.weights, device=args.device, dtype=args.dtype, keep_loaded=args.keep_loaded)
    bar = ProgressBar() if not args.quiet else None
    try:
        _run_generation(args, pipeline, request, bar)
    finally:
        if bar is not None:
            bar.finish_line()
    return 0


def _run_generation(args: argparse.Namespace, pipeline, request: SongRequest, bar) -> None:
    import numpy as np
    from engine.audio import write_audio, write_json_atomic, write_npy_atomic
    from engine.events import CancelToken, Log, Progress, Song, Stage

    for event in pipeline.generate(request, CancelToken()):
        if bar is not None and isinstance(event, Stage):
            bar.stage_started(event.name, event.variation or 0)
        elif bar is not None and isinstance(event, Progress):
            bar.update(event.done, event.total)
        elif isinstance(event, Log):
            if bar is not None:
                bar.log(event.text)
            elif event.text.startswith("Prompt too long"):
                print(f"warning: {event.text}", file=sys.stderr)
        elif isinstance(event, Song):
            out = variation_path(args.out, event.variation)
            write_audio(out, event.audio, event.sample_rate)
            write_json_atomic(sidecar_path(out), {"audio": out.name, **event.metadata})
            if args.codes_out is not None:
                write_npy_atomic(variation_path(args.codes_out, event.variation), event.codes.astype(np.int64))
            if bar is not None:
                bar.log(f"wrote {out} ({event.seconds:.1f} s, seed {event.metadata['seed']})")
