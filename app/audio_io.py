"""Writing songs: engine.audio when present (atomic wav/flac/mp3), else a local fallback."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """``audio`` is [channels, n] float32. The file appears complete or not at all."""
    try:
        from engine.audio import write_audio as engine_write
    except ImportError:
        engine_write = None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if engine_write is not None:
        engine_write(Path(path), audio, sample_rate)
        return Path(path)
    return _fallback_write_audio(Path(path), audio, sample_rate)


def write_json_atomic(path: Path, data: dict[str, Any]) -> Path:
    try:
        from engine.audio import write_json_atomic as engine_write_json
    except ImportError:
        engine_write_json = None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if engine_write_json is not None:
        engine_write_json(Path(path), data)
        return Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return Path(path)


# FALLBACK until engine.audio lands: soundfile writes wav/flac/mp3 to a temp file, then rename.
def _fallback_write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    import soundfile

    fmt = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".mp3": ("MP3", None)}
    kind, subtype = fmt.get(path.suffix.lower(), ("WAV", "PCM_16"))
    frames = np.clip(np.asarray(audio, dtype=np.float32).T, -1.0, 1.0)
    _atomic(path, lambda tmp: soundfile.write(tmp, frames, sample_rate, format=kind, subtype=subtype))
    return path


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
