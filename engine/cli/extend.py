"""``khala extend``: continue a Khala song past its end, or regenerate it from a point (SPEC §12).

The new song keeps the song's first frames (all 64 codebooks; its audio up to 16 frames, 0.74 s,
before the cut is the song's, sample for sample) and samples the rest. Its request is the song's
own (its sidecar's), with the prompt and sampling flags given here on top; its sidecar names the
parent song and cut.
Everything about the song, the cut, the request, the token cap and the output is checked before a
model loads; nothing is written on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import add_prompt_flags, add_weights_flag, given_fields, weights_dir
from engine.errors import RequestError
from engine.events import CancelToken
from engine.extend import (AT_END, DEFAULT_ADD_MINUTES, check_room, continuation_request, continued_title,
                           cut_frame, default_minutes, open_song)


def register(sub: argparse._SubParsersAction) -> None:
    ext = sub.add_parser("extend", help="continue a song made by Khala, or regenerate it from a point",
                         description=__doc__.split("\n\n")[1])
    add_weights_flag(ext, required=False)
    ext.add_argument("--song", type=Path, required=True, metavar="FILE.{wav,flac,mp3}",
                     help="a song made by Khala, with its sidecar FILE.ext.json and codes FILE.ext.codes.npy beside it")
    ext.add_argument("--at", default=AT_END, metavar="SECONDS|end",
                     help="keep the song up to this time (frames 0..floor(SECONDS·44100/2048)-1) and write a new "
                          "rest; 'end' (default) keeps the whole song and continues it")
    ext.add_argument("--minutes", type=int, default=None, metavar="MIN",
                     help="the new song's whole length in minutes, 0..10 (its duration token); default: about "
                          f"{DEFAULT_ADD_MINUTES} minute longer than the song with --at end, the song's own with "
                          "--at SECONDS")
    add_prompt_flags(ext, overrides=True)
    ext.add_argument("--temperature", type=float, default=None, help="default: the song's own")
    ext.add_argument("--top-k", type=int, default=None, help="default: the song's own")
    ext.add_argument("--top-k-sr", type=int, default=None, help="super-resolution top-k; default: the song's own")
    ext.add_argument("--seed", type=int, default=None, help="default: a new random seed")
    ext.add_argument("--max-tokens", type=int, default=None,
                     help="cap on NEW backbone tokens (default: all the room the song leaves under 23552)")
    ext.add_argument("--device", default=None, help="auto, mps, cuda or cpu (env KHALA_DEVICE)")
    ext.add_argument("--dtype", default=None, help="auto, float32, float16 or bfloat16 (env KHALA_DTYPE)")
    ext.add_argument("--out", type=Path, required=True, metavar="FILE.{wav,flac,mp3}",
                     help="the new song; its sidecar FILE.ext.json and codes FILE.ext.codes.npy go beside it")
    ext.add_argument("--codes-out", type=Path, default=None, metavar="FILE.npy", help="also copy the codes here")
    ext.add_argument("--quiet", action="store_true")
    ext.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.cli.generate import check_outputs, write_events

    source = open_song(args.song)  # SongFileError: no sidecar, no codes, another model's codes
    if args.out.resolve() == source.song.audio_path.resolve():
        raise RequestError(f"--out {args.out} is the song itself; write the new song to another file.")
    cut = cut_frame(args.at, source.frames)
    overrides = given_fields(args)
    minutes = overrides.pop("minutes", None)
    request = continuation_request(source.request, overrides,
                                   minutes=default_minutes(source, cut) if minutes is None else minutes)
    request.validate()
    continuation = source.continuation(cut)
    continuation.validate()
    check_room(cut, request.max_tokens)
    check_outputs(args, request, prefix_frames=cut)

    from engine.pipeline import Pipeline  # torch: only once everything above holds

    pipeline = Pipeline(weights_dir(args), device=args.device, dtype=args.dtype)
    title = continued_title(continuation.title, continuation) if continuation.title else None
    write_events(args, pipeline.generate(request, CancelToken(), continuation=continuation), title=title)
    return 0
