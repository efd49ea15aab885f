"""A one-line progress bar for stderr: stage, count, rate and ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from engine.events import BACKBONE, DECODE, SUPERRES

MIN_REDRAW_S = 0.1
MIN_RATE_S = 1.0  # a rate over less time than this (or a server's first jump) says nothing yet
UNITS = {BACKBONE: "tok", SUPERRES: "pass", DECODE: "chunk"}


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr  # looked up per bar: sys.stderr may be replaced after import
        self.width = width
        self.stage = ""
        self.started = time.monotonic()
        self._dirty = False
        self._drawn_at = 0.0
        self._first: tuple[float, int] | None = None  # (time, count) of the stage's first update
        isatty = getattr(self.stream, "isatty", None)
        self._redraw = bool(isatty and isatty())  # a terminal: one line redrawn; a file or pipe: a line per tenth
        self._tenth = -1

    def stage_started(self, name: str, variation: int | None = None) -> None:
        self.finish_line()
        self.stage = name
        self.started = time.monotonic()
        self._first = None
        self._tenth = -1
        suffix = f" (variation {variation + 1})" if variation else ""
        self.stream.write(f"» {name.replace('_', ' ')}{suffix}\n")
        self.stream.flush()

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        total = max(total, 1)
        if self._redraw:
            if done < total and now - self._drawn_at < MIN_REDRAW_S:
                return
        else:
            tenth = min(10, 10 * done // total)
            if tenth <= self._tenth:
                return
            self._tenth = tenth
        self._drawn_at = now
        filled = int(min(done / total, 1.0) * self.width)
        unit = UNITS.get(self.stage, "")
        t0, done0 = self._first
        if now - t0 >= MIN_RATE_S and done > done0:
            rate = (done - done0) / (now - t0)  # counted from the first update: a resumed or remote
            speed = f"{rate:6.1f} {unit}/s  ETA {format_eta((total - done) / rate)}"  # stage may start high
        else:
            speed = f"{'--':>6} {unit}/s  ETA -:--"
        line = f"  [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {unit} {speed}"
        self.stream.write(f"\r{line} " if self._redraw else f"{line}\n")
        self.stream.flush()
        self._dirty = self._redraw

    def finish_line(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self._dirty = False

    def log(self, text: str) -> None:
        self.finish_line()
        self.stream.write(f"  {text}\n")
        self.stream.flush()
