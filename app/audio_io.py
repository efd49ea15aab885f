"""Writing songs from the app: engine.audio's atomic writers, into folders created on demand.

The CLI refuses a missing output folder; the app's songs folder and export targets may not
exist yet, so they are created here before the engine writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine import audio


def write_audio(path: Path, data: np.ndarray, sample_rate: int) -> Path:
    """``data`` is [channels, n] float32. The file appears complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio.write_audio(path, data, sample_rate)
    return path


def write_json_atomic(path: Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio.write_json_atomic(path, data)
    return path
