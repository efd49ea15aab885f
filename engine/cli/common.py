"""Flags and helpers that several ``khala`` sub-commands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

from engine.errors import OutputError, RequestError
from engine.request import SongRequest

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3")


def add_prompt_flags(p: argparse.ArgumentParser, *, overrides: bool = False) -> None:
    """The prompt flags. ``overrides``: each defaults to None, meaning "not given" (``khala extend``
    keeps the song's own value), and there is no --duration (extend has --minutes)."""
    unset = None if overrides else ""
    keep = " (default: the song's own)" if overrides else ""
    p.add_argument("--tags", default=unset, help="comma-separated style tags, e.g. 'Pop, Female Vocals, Piano' "
                                                 "(give at least one of --tags, --description, --genre)" + keep)
    p.add_argument("--description", default=unset, help="a free description (used instead of tags)" + keep)
    p.add_argument("--genre", default=unset,
                   help="a genre (used when there are neither tags nor a description)" + keep)
    lyr = p.add_mutually_exclusive_group()
    lyr.add_argument("--lyrics", default=None, help="the lyrics text; here (and only here) a typed \\n, backslash "
                                                   "then n, also starts a new line" + keep)
    lyr.add_argument("--lyrics-file", type=Path, default=None, metavar="FILE",
                     help="a UTF-8 text file of lyrics, taken literally: a backslash-n in the file stays two characters")
    p.add_argument("--instrumental", action="store_true", default=None if overrides else False)
    if not overrides:
        p.add_argument("--duration", type=int, default=2, metavar="MIN", help="whole minutes, 0..10 (default 2)")


def add_weights_flag(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--weights DIR; when not required, its default is found by :func:`weights_dir`."""
    p.add_argument("--weights", type=Path, required=required, metavar="DIR",
                   help="folder with the six weight files and tokenizer.json" + ("" if required else
                        " (default: $KHALA_WEIGHTS, else the app-data folder `khala weights download` fills)"))


def weights_dir(args: argparse.Namespace, alternative: str = "") -> Path:
    """--weights, else $KHALA_WEIGHTS, else the app-data folder when it exists. Raises RequestError
    naming the folder it looked in; ``alternative`` adds another way out (e.g. a server)."""
    from engine.weights.folder import default_weights_dir

    if args.weights is not None:
        return args.weights
    folder = default_weights_dir()
    if folder.is_dir():
        return folder
    shown = str(folder).replace(str(Path.home()), "~", 1)
    raise RequestError(f"No model at {shown}: download it with `khala weights download`, or say where it is: "
                       f"--weights DIR{alternative}.")


# flag (argparse dest) → SongRequest field
_FIELDS = {"tags": "tags", "description": "description", "genre": "genre", "instrumental": "instrumental",
           "duration": "minutes", "minutes": "minutes", "temperature": "temperature", "top_k": "top_k",
           "top_k_sr": "top_k_superres", "seed": "seed", "variations": "variations", "max_tokens": "max_tokens"}


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The SongRequest fields the command line gave: every flag of the command whose value is not None
    (lyrics from --lyrics or --lyrics-file)."""
    from engine.prompt.template import read_lyrics_file
    fields = {field: getattr(args, flag) for flag, field in _FIELDS.items() if getattr(args, flag, None) is not None}
    if getattr(args, "lyrics_file", None) is not None:
        fields["lyrics"] = read_lyrics_file(args.lyrics_file)  # literal, as the app's lyrics box
    elif getattr(args, "lyrics", None) is not None:
        fields["lyrics"] = args.lyrics.replace("\\n", "\n")  # a shell argument cannot easily hold a line break
    return fields


def request_from_args(args: argparse.Namespace) -> SongRequest:
    return SongRequest(**given_fields(args))


def check_output_path(path: Path, suffixes: Sequence[str]) -> None:
    """Fail before any model is loaded when the output cannot be written."""
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"Output {path} must end in {', '.join(suffixes)}.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"Cannot write {path}: folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"Cannot write {path}: folder {folder} is not writable.")
    try:
        limit = min(255, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        limit = 255
    size = len(path.name.encode())
    if size > limit:  # Path.is_dir() would raise OSError (ENAMETOOLONG)
        raise OutputError(f"Cannot write {path.name[:40]}…: the name is {size} bytes; this file system allows {limit}.")
    if path.is_dir():
        raise OutputError(f"Cannot write {path}: it is a folder.")
