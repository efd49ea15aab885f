"""A one-line progress bar for stderr: stage, count, rate and ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from engine.events import BACKBONE, DECODE, SUPERRES

MIN_REDRAW_S = 0.1
UNITS = {BACKBONE: "tok", SUPERRES: "pass", DECODE: "chunk"}


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    def __init__(self, stream: TextIO = sys.stderr, width: int = 28) -> None:
        self.stream = stream
        self.width = width
        self.stage = ""
        self.started = time.monotonic()
        self._dirty = False
        self._drawn_at = 0.0

    def stage_started(self, name: str, variation: int | None = None) -> None:
        self.finish_line()
        self.stage = name
        self.started = time.monotonic()
        suffix = f" (variation {variation + 1})" if variation else ""
        self.stream.write(f"» {name.replace('_', ' ')}{suffix}\n")
        self.stream.flush()

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn_at < MIN_REDRAW_S:
            return
        self._drawn_at = now
        total = max(total, 1)
        frac = min(done / total, 1.0)
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        filled = int(frac * self.width)
        unit = UNITS.get(self.stage, "")
        line = (f"\r  [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {unit} "
                f"{rate:6.1f} {unit}/s  ETA {format_eta(eta)} ")
        self.stream.write(line)
        self.stream.flush()
        self._dirty = True

    def finish_line(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self._dirty = False

    def log(self, text: str) -> None:
        self.finish_line()
        self.stream.write(f"  {text}\n")
        self.stream.flush()
