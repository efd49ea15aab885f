"""Extend a song, or regenerate it from a point (SPEC §12): the rules ``khala extend`` and the app share.

Torch-free. A song on disk (engine.song_file: audio + sidecar + int16 codes [64, frames]) is
opened with ``open_song``; ``cut_frame`` turns ``--at SECONDS | end`` into the number of frames
kept; ``continuation_request`` makes the new request from the song's own (the sidecar's), the
caller's overrides and the new total length; ``check_room`` is the token-cap rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import RequestError
from engine.request import (DURATION_RANGE, SAMPLE_RATE, SAMPLES_PER_FRAME, UPSTREAM_TOKEN_CAP, Continuation,
                            SongRequest)
from engine.song_file import SongOnDisk, load_codes, read_song

FRAMES_PER_SECOND = SAMPLE_RATE / SAMPLES_PER_FRAME  # 21.53 frames (2 backbone tokens each) per second
EXPECTED_EXTRA_MINUTES = 0.8  # SPEC §6: a song of duration token d is expected to last about d + 0.8 minutes
DEFAULT_ADD_MINUTES = 1  # `khala extend --at end` without --minutes: about a minute longer
AT_END = "end"
# Run settings of the parent that a continuation does not inherit: a new seed (unless given), the
# whole room under the cap for new tokens (unless given), one song.
NOT_INHERITED = ("seed", "max_tokens", "variations")


def format_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


@dataclass
class SongSource:
    """A song that can be continued: its files, its request and its codes (int64 [64, frames])."""

    song: SongOnDisk
    codes: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames / FRAMES_PER_SECOND

    @property
    def request(self) -> dict[str, Any]:
        request = self.song.sidecar.get("request")
        return dict(request) if isinstance(request, dict) else {}

    def continuation(self, cut: int, title: str | None = None) -> Continuation:
        """Keep frames 0..cut-1; ``title``: the parent's title (default: its sidecar's)."""
        return Continuation(codes=self.codes, cut_frame=cut, parent=self.song.audio_path.name,
                            title=self.song.title if title is None else title)


def open_song(path: Path | str) -> SongSource:
    """The song at ``path`` with its sidecar and codes; SongFileError (one line) when either is missing,
    damaged, or holds codes of another token layout."""
    song = read_song(path)
    return SongSource(song, load_codes(song))


def cut_frame(at: str | float | None, frames: int) -> int:
    """Frames kept: ``None`` or "end" keeps all ``frames``; a time in seconds keeps frames
    0..floor(seconds·44100/2048)-1. RequestError for a time that is not a number, negative, or past
    the song's end."""
    if at is None or (isinstance(at, str) and at.strip().lower() == AT_END):
        return frames
    try:
        seconds = float(at)
    except (TypeError, ValueError):
        raise RequestError(f"--at must be a time in seconds or 'end'; got {str(at)[:40]!r}.") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise RequestError(f"--at must be a time from 0 seconds to the song's end; got {str(at)[:40]}.")
    cut = math.floor(seconds * SAMPLE_RATE / SAMPLES_PER_FRAME + 1e-6)  # a frame's own time, round-tripped, is it
    if cut > frames:
        raise RequestError(f"--at {seconds:g} s is past the song's end: it is {frames / FRAMES_PER_SECOND:.2f} s "
                           f"({frames} frames) long. Use --at end to continue it.")
    return cut


def extended_minutes(song_seconds: float, add_minutes: float) -> int:
    """The duration token for a song about ``add_minutes`` longer than ``song_seconds``: the d whose
    expected length d + 0.8 minutes (SPEC §6) is nearest, within 0..10 (at least 1 when adding)."""
    lo, hi = DURATION_RANGE
    floor = max(lo, 1) if add_minutes > 0 else lo
    return int(min(hi, max(floor, round(song_seconds / 60 + add_minutes - EXPECTED_EXTRA_MINUTES))))


def default_minutes(source: SongSource, cut: int, add_minutes: float = DEFAULT_ADD_MINUTES) -> int:
    """The new song's duration token when none is given. Continuing at the end: about ``add_minutes``
    longer than the song (``extended_minutes``). Regenerating from a point: the song's own duration
    token (a new version of the same song), or its length when the sidecar has none."""
    if cut < source.frames:
        own = source.request.get("minutes")
        if _plain("minutes", own) and DURATION_RANGE[0] <= own <= DURATION_RANGE[1]:
            return own
        add_minutes = 0
    return extended_minutes(source.seconds, add_minutes)


def continued_title(title: str, continuation: Continuation) -> str:
    """The new song's title: "X (extended)" when it continues the whole song, "X (from 1:23)" otherwise."""
    frames = int(continuation.codes.shape[1])
    if continuation.cut_frame >= frames:
        return f"{title} (extended)"
    return f"{title} (from {format_time(continuation.cut_frame / FRAMES_PER_SECOND)})"


def combine_lyrics(original: str, new: str) -> str:
    """The prompt's lyrics when new lyrics are given for the new part: the song's own lyrics, then the
    new ones. The model reads the lyrics as the whole song's, in order; the kept part already
    sings the original lines, so the new lines are what comes next."""
    original, new = original.strip(), new.strip()
    return f"{original}\n\n{new}" if original and new else (original or new)


def continuation_request(parent: dict[str, Any], overrides: dict[str, Any], *, minutes: int) -> SongRequest:
    """The new song's request: the parent's prompt and sampling settings, ``overrides`` (SongRequest
    fields the caller gave) on top, ``minutes`` as the duration unless overridden. Lyrics given
    without ``instrumental`` make the song a sung one."""
    fields = {k: v for k, v in parent.items() if k not in NOT_INHERITED and _plain(k, v)}
    if "lyrics" in overrides and "instrumental" not in overrides:
        fields["instrumental"] = False
    fields.update(minutes=minutes)
    fields.update(overrides)
    return SongRequest.from_dict(fields)


_TYPES = {"tags": str, "description": str, "genre": str, "lyrics": str, "instrumental": bool, "minutes": int,
          "temperature": (int, float), "top_k": int, "top_k_superres": int}


def _plain(name: str, value: Any) -> bool:
    """A sidecar's request field of the right type (a damaged sidecar's values are left out, not trusted)."""
    kind = _TYPES.get(name)
    return kind is not None and isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def check_room(prefix_frames: int, max_tokens: int | None) -> int:
    """New backbone tokens allowed after ``prefix_frames`` kept frames (2 tokens each) under the
    model's 23 552-token cap; RequestError when none, or fewer than ``max_tokens``."""
    prefix_tokens = 2 * prefix_frames
    room = UPSTREAM_TOKEN_CAP - prefix_tokens
    if room < 2:
        raise RequestError(f"The song is too long to continue: its first {prefix_tokens:,} tokens leave no room "
                           f"under the model's {UPSTREAM_TOKEN_CAP:,}-token cap. Cut it earlier.")
    if max_tokens is not None and max_tokens > room:
        raise RequestError(f"{prefix_tokens:,} tokens of the song plus {max_tokens:,} new ones pass the "
                           f"model's {UPSTREAM_TOKEN_CAP:,}-token cap; ask for at most {room:,} new tokens.")
    return room
