"""Flags and helpers that several ``khala`` sub-commands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from engine.errors import OutputError
from engine.request import SongRequest

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3")


def add_prompt_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tags", default="", help="comma-separated style tags, e.g. 'Pop, Female Vocals, Piano' "
                                              "(give at least one of --tags, --description, --genre)")
    p.add_argument("--description", default="", help="a free description (used instead of tags)")
    p.add_argument("--genre", default="", help="a genre (used when there are neither tags nor a description)")
    lyr = p.add_mutually_exclusive_group()
    lyr.add_argument("--lyrics", default=None,
                     help="the lyrics text; here (and only here) a typed \\n, backslash then n, also starts a new line")
    lyr.add_argument("--lyrics-file", type=Path, default=None, metavar="FILE",
                     help="a UTF-8 text file of lyrics, taken literally: a backslash-n in the file stays two characters")
    p.add_argument("--instrumental", action="store_true")
    p.add_argument("--duration", type=int, default=2, metavar="MIN", help="whole minutes, 0..10 (default 2)")


def add_weights_flag(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--weights", type=Path, required=required, metavar="DIR",
                   help="folder with the six weight files and tokenizer.json")


def request_from_args(args: argparse.Namespace) -> SongRequest:
    from engine.prompt.template import read_lyrics_file
    if args.lyrics_file is not None:
        lyrics = read_lyrics_file(args.lyrics_file)  # literal, as the app's lyrics box
    else:
        lyrics = (args.lyrics or "").replace("\\n", "\n")  # a shell argument cannot easily hold a line break
    fields = dict(tags=args.tags, description=args.description, genre=args.genre, lyrics=lyrics,
                  instrumental=args.instrumental, minutes=args.duration)
    for name in ("temperature", "top_k", "seed", "variations", "max_tokens"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    if hasattr(args, "top_k_sr"):
        fields["top_k_superres"] = args.top_k_sr
    return SongRequest(**fields)


def check_output_path(path: Path, suffixes: Sequence[str]) -> None:
    """Fail before any model is loaded when the output cannot be written."""
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"Output {path} must end in {', '.join(suffixes)}.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"Cannot write {path}: folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"Cannot write {path}: folder {folder} is not writable.")
    if path.is_dir():
        raise OutputError(f"Cannot write {path}: it is a folder.")
