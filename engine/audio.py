"""Audio encoding, tags and atomic single-file writes. numpy + soundfile + mutagen only (no torch, no Qt).

Formats (chosen for macOS Finder/QuickTime/Music and DAWs alike):
* .wav  — 24-bit PCM with an ID3 chunk (Music and most DAWs read it).
* .flac — 16-bit with Vorbis comments: a sharing format, half the size of 24-bit.
* .mp3  — MPEG Layer III at libsndfile's highest quality (needs libsndfile ≥ 1.1), ID3v2.
Samples are clipped to [-1, 1] (the decoder has no tanh); clipping is logged with the peak.

Audio is encoded into memory first and then written with Python's own file calls, so a
failed write keeps the operating system's reason ("No space left on device"), never
libsndfile's "System error".
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from engine.errors import OutputError

log = logging.getLogger(__name__)

FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_24"),
    ".flac": ("FLAC", "PCM_16"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
# Bytes per second of stereo 44.1 kHz audio, for free-space checks: 24-bit PCM exactly; FLAC
# 16-bit at most its PCM size; MP3 at libsndfile's best quality stays under 320 kbit/s.
BYTES_PER_SECOND = {".wav": 44_100 * 2 * 3, ".flac": 44_100 * 2 * 2, ".mp3": 320_000 // 8}
TEMP_PREFIX = ".khala-"
TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class AudioTags:
    """What Finder, Music and a DAW show: written as ID3 (WAV, MP3) or Vorbis comments (FLAC)."""

    title: str
    genre: str = ""
    comment: str = ""
    lyrics: str = ""
    seed: int | None = None
    artist: str = "Khala"


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name over the file system's limit: not a folder, reported elsewhere
        return False


def check_format(path: Path) -> tuple[str, str]:
    """(libsndfile format, subtype) for ``path``'s suffix; OutputError if unknown or unsupported here."""
    ext = path.suffix.lower()
    if str(path) == "-":
        raise OutputError("Cannot write a song to standard output: a song is a file with its sidecar and codes "
                          "beside it; give a file name such as song.wav.")
    if not ext and _is_folder(path):
        raise OutputError(f"Cannot write {path}: it is a folder; give a file name in it, such as "
                          f"{path / 'song.wav'}.")
    if ext not in FORMATS:
        raise OutputError(f"Cannot write {path.name}: unknown audio format {ext or '(no extension)'!r}; "
                          f"use {', '.join(FORMATS)}.")
    fmt, subtype = FORMATS[ext]
    if fmt not in sf.available_formats():
        raise OutputError(f"Cannot write {path.name}: this libsndfile ({sf.__libsndfile_version__}) has no {fmt} "
                          "support; choose .wav or .flac.")
    return fmt, subtype


def encode_audio(name: str, audio: np.ndarray, sample_rate: int, tags: AudioTags | None = None) -> bytes:
    """Float audio [channels, n] → the bytes of a .wav/.flac/.mp3 file (by ``name``'s suffix), tagged."""
    fmt, subtype = check_format(Path(name))
    audio = np.asarray(audio)
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
        raise OutputError(f"Cannot write {name}: expected audio [channels, samples] with 1 or 2 channels; "
                          f"got shape {list(audio.shape)}.")
    if not np.issubdtype(audio.dtype, np.floating):
        raise OutputError(f"Cannot write {name}: expected float samples; got {audio.dtype}.")
    if not np.isfinite(audio).all():
        raise OutputError(f"Cannot write {name}: the audio contains NaN or infinite samples "
                          "(the decoder failed numerically; try float32).")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1:
        raise OutputError(f"Cannot write {name}: invalid sample rate {sample_rate!r}.")
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        log.warning("%s: peak %.3f is above full scale; clipped to [-1, 1].", name, peak)
    frames = np.ascontiguousarray(np.clip(audio, -1.0, 1.0).astype(np.float32).T)
    extra = {"compression_level": 0.0} if fmt == "MP3" else {}
    buf = io.BytesIO()
    try:
        sf.write(buf, frames, int(sample_rate), format=fmt, subtype=subtype, **extra)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise OutputError(f"Cannot encode {name}: {str(e).splitlines()[0][:200]}") from e
    if tags is not None:
        _tag(buf, fmt, tags)
    return buf.getvalue()


def _tag(buf: io.BytesIO, fmt: str, tags: AudioTags) -> None:
    from mutagen.flac import FLAC
    from mutagen.id3 import COMM, TCON, TIT2, TPE1, TXXX, USLT
    from mutagen.mp3 import MP3
    from mutagen.wave import WAVE

    buf.seek(0)
    if fmt == "FLAC":
        f = FLAC(buf)
        values = {"TITLE": tags.title, "ARTIST": tags.artist, "GENRE": tags.genre, "COMMENT": tags.comment,
                  "LYRICS": tags.lyrics, "KHALA_SEED": "" if tags.seed is None else str(tags.seed)}
        for key, value in values.items():
            if value:
                f[key] = value
    else:
        f = WAVE(buf) if fmt == "WAV" else MP3(buf)
        if f.tags is None:
            f.add_tags()
        frames = [TIT2(encoding=3, text=tags.title), TPE1(encoding=3, text=tags.artist)]
        if tags.genre:
            frames.append(TCON(encoding=3, text=tags.genre))
        if tags.comment:
            frames.append(COMM(encoding=3, lang="eng", desc="", text=tags.comment))
        if tags.lyrics:
            frames.append(USLT(encoding=3, lang="eng", desc="", text=tags.lyrics))
        if tags.seed is not None:
            frames.append(TXXX(encoding=3, desc="KHALA_SEED", text=str(tags.seed)))
        for frame in frames:
            f.tags.add(frame)
    buf.seek(0)
    f.save(buf)


def read_tags(path: Path | str) -> dict[str, str]:
    """title, artist, genre, comment, lyrics, seed as written by ``encode_audio`` (missing → absent)."""
    import mutagen

    f = mutagen.File(str(path))
    if f is None or f.tags is None:
        return {}
    if hasattr(f.tags, "getall"):  # ID3
        pick = {"title": "TIT2", "artist": "TPE1", "genre": "TCON", "comment": "COMM", "lyrics": "USLT",
                "seed": "TXXX:KHALA_SEED"}
        out = {}
        for key, frame_id in pick.items():
            frames = f.tags.getall(frame_id)
            if frames:
                out[key] = str(frames[0].text[0] if isinstance(frames[0].text, list) else frames[0].text)
        return out
    names = {"title": "title", "artist": "artist", "genre": "genre", "comment": "comment", "lyrics": "lyrics",
             "seed": "khala_seed"}
    return {key: f.tags[name][0] for key, name in names.items() if name in f.tags}


# -- atomic writes ---------------------------------------------------------------------------------
def temp_path(folder: Path) -> Path:
    """A fresh hidden temporary name in ``folder`` that names this process (so a later run can tell a
    stale one from a live one) and stays far below any file-name length limit."""
    return folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def write_error(path: Path, e: BaseException) -> OutputError:
    """The OS's own reason, with the file's name: 'No space left on device', 'Permission denied'."""
    folder = path.parent
    if isinstance(e, OutputError):
        return e
    if isinstance(e, OSError):
        if not folder.is_dir():
            return OutputError(f"Cannot write {path.name}: the folder {folder} does not exist.")
        if isinstance(e, PermissionError):
            return OutputError(f"Cannot write {path.name}: no permission to write in {folder}.")
        return OutputError(f"Cannot write {path.name} in {folder}: {e.strerror or e}.")
    return OutputError(f"Cannot write {path.name}: {e}.")


def write_temp(folder: Path, data: bytes, name: Path | None = None) -> Path:
    """Write ``data`` to a new temporary file in ``folder`` (or exactly ``name``) and fsync it."""
    tmp = name or temp_path(folder)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """``path`` holds ``data`` completely or keeps what it held: temp file, fsync, rename."""
    path = Path(path)
    try:
        tmp = write_temp(path.parent, data)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, Exception):
            raise write_error(path, e) from e
        raise


def write_audio(path: Path | str, audio: np.ndarray, sample_rate: int = 44100,
                tags: AudioTags | None = None) -> None:
    """Write float audio [channels, n] to .wav, .flac or .mp3, atomically."""
    path = Path(path)
    write_bytes_atomic(path, encode_audio(path.name, audio, sample_rate, tags))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_json(name: str, data: Any) -> bytes:
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as e:
        raise OutputError(f"Cannot write {name}: {e}.") from e
    return text.encode("utf-8")


def write_json_atomic(path: Path | str, data: Any) -> None:
    path = Path(path)
    write_bytes_atomic(path, encode_json(path.name, data))


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_npy_atomic(path: Path | str, array: np.ndarray) -> None:
    write_bytes_atomic(Path(path), encode_npy(array))


def audio_stats(audio: np.ndarray, sample_rate: int = 44100) -> dict[str, Any]:
    """seconds, sample_rate, channels, peak and rms (over finite samples), has_nan, has_inf."""
    audio = np.asarray(audio, dtype=np.float64)
    finite = np.isfinite(audio)
    values = audio[finite]
    return {
        "seconds": audio.shape[-1] / sample_rate if audio.ndim else 0.0,
        "sample_rate": sample_rate,
        "channels": audio.shape[0] if audio.ndim == 2 else 1,
        "peak": float(np.abs(values).max()) if values.size else 0.0,
        "rms": float(np.sqrt(np.mean(values**2))) if values.size else 0.0,
        "has_nan": bool(np.isnan(audio).any()),
        "has_inf": bool(np.isinf(audio).any()),
    }
