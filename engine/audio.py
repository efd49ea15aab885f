"""Write songs and sidecars atomically; inspect audio. numpy + soundfile only (no torch, no Qt).

Formats (chosen for macOS Finder/QuickTime/Music and DAWs alike):
* .wav  — 24-bit PCM: every DAW and macOS read it; no dither needed for model output.
* .flac — 16-bit: a sharing format, half the size of 24-bit, plays everywhere FLAC does.
* .mp3  — MPEG Layer III at libsndfile's highest quality (needs libsndfile ≥ 1.1).
Samples are clipped to [-1, 1] (the decoder has no tanh); clipping is logged with the peak.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
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


def _temp_beside(path: Path) -> Path:
    """A new, empty file in the same folder (so os.replace is atomic), with the usual umask permissions."""
    for _ in range(16):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(tmp)


def _folder_error(path: Path, e: OSError) -> OutputError:
    folder = path.parent
    if not folder.is_dir():
        return OutputError(f"Cannot write {path.name}: the folder {folder} does not exist.")
    if isinstance(e, PermissionError):
        return OutputError(f"Cannot write {path.name}: no permission to write in {folder}.")
    return OutputError(f"Cannot write {path}: {e.strerror or e}.")


def _commit(path: Path, write: Any) -> None:
    """Run ``write(tmp)``, fsync, then move tmp over ``path``; on any failure remove tmp, keep ``path``."""
    try:
        tmp = _temp_beside(path)
    except OSError as e:
        raise _folder_error(path, e) from e
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OutputError):
            raise
        if isinstance(e, OSError):
            raise _folder_error(path, e) from e
        if isinstance(e, Exception):
            raise OutputError(f"Cannot write {path}: {e}.") from e
        raise


def write_audio(path: Path | str, audio: np.ndarray, sample_rate: int = 44100) -> None:
    """Write float audio [channels, n] to .wav, .flac or .mp3, atomically."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise OutputError(f"Cannot write {path.name}: unknown audio format {ext or '(no extension)'!r}; "
                          f"use {', '.join(FORMATS)}.")
    fmt, subtype = FORMATS[ext]
    if fmt not in sf.available_formats():
        raise OutputError(f"Cannot write {path.name}: this libsndfile ({sf.__libsndfile_version__}) has no {fmt} "
                          "support; choose .wav or .flac.")
    audio = np.asarray(audio)
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
        raise OutputError(f"Cannot write {path.name}: expected audio [channels, samples] with 1 or 2 channels; "
                          f"got shape {list(audio.shape)}.")
    if not np.issubdtype(audio.dtype, np.floating):
        raise OutputError(f"Cannot write {path.name}: expected float samples; got {audio.dtype}.")
    if not np.isfinite(audio).all():
        raise OutputError(f"Cannot write {path.name}: the audio contains NaN or infinite samples "
                          "(the decoder failed numerically; try float32).")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1:
        raise OutputError(f"Cannot write {path.name}: invalid sample rate {sample_rate!r}.")
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        log.warning("%s: peak %.3f is above full scale; clipped to [-1, 1].", path.name, peak)
    frames = np.ascontiguousarray(np.clip(audio, -1.0, 1.0).astype(np.float32).T)
    extra = {"compression_level": 0.0} if fmt == "MP3" else {}

    def write(tmp: Path) -> None:
        sf.write(tmp, frames, int(sample_rate), format=fmt, subtype=subtype, **extra)

    _commit(path, write)


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


def write_json_atomic(path: Path | str, data: Any) -> None:
    path = Path(path)
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as e:
        raise OutputError(f"Cannot write {path.name}: {e}.") from e
    _commit(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_npy_atomic(path: Path | str, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, array)
    _commit(Path(path), write)


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
