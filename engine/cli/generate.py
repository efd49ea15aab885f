"""``khala generate``: write a song (and its variations) to audio files, each with its sidecar and codes."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from engine.cli.common import add_prompt_flags, add_weights_flag, check_output_path, request_from_args, weights_dir
from engine.errors import RequestError
from engine.events import CancelToken, Log, Preview, Progress, Song, Stage
from engine.request import SAMPLE_RATE, SAMPLES_PER_FRAME, SongRequest, expected_tokens

PREVIEW_EVERY_S = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="write a song to an audio file")
    add_weights_flag(gen, required=False)
    gen.add_argument("--server", default=None, metavar="URL",
                     help="make the song on an upstream Khala server (its dispatcher) instead of this machine")
    add_prompt_flags(gen)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=80)
    gen.add_argument("--top-k-sr", type=int, default=10, help="super-resolution top-k (upstream: 10)")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--variations", type=int, default=1, help="1..4 songs with consecutive seeds, made as one batch")
    gen.add_argument("--max-tokens", type=int, default=None, help="cap on backbone tokens (default 23552)")
    gen.add_argument("--device", default=None, help="auto, mps, cuda or cpu (env KHALA_DEVICE)")
    gen.add_argument("--dtype", default=None, help="auto, float32, float16 or bfloat16 (env KHALA_DTYPE)")
    gen.add_argument("--keep-loaded", action="store_true", help="keep every model in memory (faster, larger)")
    gen.add_argument("--out", type=Path, required=True, metavar="FILE.{wav,flac,mp3}",
                     help="the song; its sidecar FILE.ext.json and codes FILE.ext.codes.npy go beside it")
    gen.add_argument("--codes-out", type=Path, default=None, metavar="FILE.npy", help="also copy the codes here")
    gen.add_argument("--preview-out", type=Path, default=None, metavar="FILE.wav",
                     help="rewrite this file with a rough preview of the song so far while it is written")
    gen.add_argument("--preview-every", type=float, default=PREVIEW_EVERY_S, metavar="SECONDS",
                     help=f"new audio between previews (default {PREVIEW_EVERY_S:g})")
    gen.add_argument("--quiet", action="store_true")
    gen.set_defaults(handler=run)


def expected_seconds(request: SongRequest, prefix_frames: int = 0) -> float:
    """The song's expected length (SPEC §6's progress estimate), for the free-space check."""
    new_tokens = expected_tokens(request.minutes) - 2 * prefix_frames
    if request.max_tokens:
        new_tokens = min(new_tokens, request.max_tokens)
    return (prefix_frames + max(new_tokens, 0) // 2) * SAMPLES_PER_FRAME / SAMPLE_RATE


def check_outputs(args: argparse.Namespace, request: SongRequest, prefix_frames: int = 0) -> None:
    """Everything about the output files that is knowable before the model runs (``khala generate`` and
    ``khala extend``: ``prefix_frames`` of a continued song count towards its expected length)."""
    from engine.song_file import check_output, recover
    recover(args.out.parent if str(args.out.parent) else Path("."))
    check_output(args.out, variations=request.variations, seconds=expected_seconds(request, prefix_frames))
    if args.codes_out is not None:
        check_output_path(args.codes_out, (".npy",))
    if getattr(args, "preview_out", None) is not None:  # `khala extend` has no --preview-out
        check_output(args.preview_out, seconds=expected_seconds(request, prefix_frames))
        _check_preview_apart(args, request.variations)
        if not args.preview_every > 0:
            raise RequestError(f"--preview-every must be a positive number of seconds; got {args.preview_every:g}.")


def _check_preview_apart(args: argparse.Namespace, variations: int) -> None:
    """The preview is rewritten many times: it must not be one of the songs' audio files (their
    sidecars and codes are .json/.npy, which the format check already refuses)."""
    from engine.song_file import variation_path

    preview = args.preview_out.resolve()
    if any(preview == variation_path(args.out, i).resolve() for i in range(variations)):
        raise RequestError(f"--preview-out {args.preview_out.name} is one of the song's own files; "
                           "give the preview a name of its own.")


def run(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    request.validate()
    if args.server:
        return _run_remote(args, request)
    weights = weights_dir(args, " (or --server URL for a Khala server)")
    from engine.pipeline import Pipeline

    check_outputs(args, request)
    pipeline = Pipeline(weights, device=args.device, dtype=args.dtype, keep_loaded=args.keep_loaded)
    write_events(args, pipeline.generate(request, CancelToken(),
                                         preview_every=args.preview_every if args.preview_out else None))
    return 0


def _run_remote(args: argparse.Namespace, request: SongRequest) -> int:
    """The same song on an upstream Khala server; what it cannot do is refused before sending."""
    from engine.remote.client import RemotePipeline
    from engine.remote.protocol import TRACKS_PER_JOB

    local_only = {"--weights": args.weights, "--codes-out": args.codes_out, "--preview-out": args.preview_out,
                  "--device": args.device, "--dtype": args.dtype, "--keep-loaded": args.keep_loaded or None}
    given = [flag for flag, value in local_only.items() if value is not None]
    if given:
        raise RequestError(f"{', '.join(given)} cannot be used with --server: the server runs its own model, "
                           "returns audio without codes and sends no previews.")
    check_outputs(args, dataclasses.replace(request, variations=max(request.variations, TRACKS_PER_JOB)))
    write_events(args, RemotePipeline(args.server).generate(request, CancelToken()))
    return 0


def write_events(args: argparse.Namespace, events, title: str | None = None) -> None:
    """Draw the events as a progress bar and write each Song (and previews) where ``args`` says;
    ``title``: the songs' title (default: made from the request)."""
    import numpy as np

    from engine.audio import write_audio, write_npy_atomic
    from engine.cli.progress_bar import ProgressBar
    from engine.song_file import variation_path, write_song

    bar = ProgressBar() if not args.quiet else None
    try:
        for event in events:
            if bar is not None and isinstance(event, Stage):
                bar.stage_started(event.name, event.variation)
            elif bar is not None and isinstance(event, Progress):
                bar.update(event.done, event.total)
            elif isinstance(event, Log):
                if bar is not None:
                    bar.log(event.text)
                elif event.level == "warning":
                    print(f"warning: {event.text}", file=sys.stderr)
            elif isinstance(event, Preview) and getattr(args, "preview_out", None) is not None:
                write_audio(args.preview_out, event.audio, event.sample_rate)
            elif isinstance(event, Song):
                saved = write_song(event, variation_path(args.out, event.variation), title=title)
                if args.codes_out is not None and event.codes is not None:
                    write_npy_atomic(variation_path(args.codes_out, event.variation), np.asarray(event.codes, np.int16))
                if bar is not None:
                    seed = event.metadata.get("seed")
                    bar.log(f"wrote {saved.audio_path} ({event.seconds:.1f} s, "
                            f"{'seed chosen by the server' if seed is None else f'seed {seed}'})")
    finally:
        if bar is not None:
            bar.finish_line()
