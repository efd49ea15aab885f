"""Turns engine events into what the status line says: stage, units done, overall percent,
speed and an ETA.

The ETA comes only from speed measured in this run, never from a guess. The line fits one
line of the status label at the smallest window (MAX_STATUS_CHARS): the least useful parts
(speed, then units, then the ETA) are left out first; ``Snapshot.detail`` keeps them all."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from engine.events import (BACKBONE, DECODE, LOAD_BACKBONE, LOAD_DECODER, LOAD_SUPERRES, QUEUED, SUPERRES, WRITE,
                           Progress, Stage)

STAGE_LABELS = {
    QUEUED: "Waiting in the server's queue",
    LOAD_BACKBONE: "Loading the song model",
    BACKBONE: "Writing the song",
    LOAD_SUPERRES: "Loading the detail model",
    SUPERRES: "Adding detail",
    LOAD_DECODER: "Loading the audio decoder",
    DECODE: "Rendering audio",
    WRITE: "Saving",
}
# What one unit of progress is called in each stage; the backbone's total is an estimate.
UNITS = {BACKBONE: ("", "tokens"), SUPERRES: ("pass ", ""), DECODE: ("chunk ", "")}
# Share of one variation's time each stage takes, for the overall percent (engine.events' order).
STAGE_WEIGHTS = {QUEUED: 0.0, LOAD_BACKBONE: 0.04, BACKBONE: 0.60, LOAD_SUPERRES: 0.03, SUPERRES: 0.22,
                 LOAD_DECODER: 0.01, DECODE: 0.08, WRITE: 0.02}
STAGE_ORDER = list(STAGE_WEIGHTS)
# The status label is ~380 px wide at the smallest window (910 px): about 60 average characters.
MAX_STATUS_CHARS = 56
# "almost done" only from here on: below it a short ETA says "about 5 s left" instead.
ALMOST_DONE = 0.9


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_eta(seconds: float, fraction: float = 1.0) -> str:
    """Rounded so the number does not pretend to more precision than the measurement has;
    "almost done" only when ``fraction`` (of the whole job) is at least ALMOST_DONE."""
    if seconds < 5:
        return "almost done" if fraction >= ALMOST_DONE else "about 5 s left"
    if seconds < 60:
        return f"about {max(5, int(round(seconds / 5)) * 5)} s left"
    if seconds < 600:
        minutes, sec = divmod(int(round(seconds / 10)) * 10, 60)
        return f"about {minutes} min {sec} s left" if sec else f"about {minutes} min left"
    if seconds < 3600:
        return f"about {int(round(seconds / 60))} min left"
    hours, minutes = divmod(int(round(seconds / 60)), 60)
    return f"about {hours} h {minutes:02d} min left"


def format_rate(per_second: float) -> str:
    return f"{per_second:.1f}" if per_second < 10 else f"{per_second:,.0f}"


@dataclass
class Snapshot:
    percent: int
    text: str  # at most MAX_STATUS_CHARS
    detail: str = ""  # every part, for a tooltip


class ProgressTracker:
    def __init__(self, variations: int = 1, clock: Callable[[], float] = time.monotonic,
                 max_chars: int = MAX_STATUS_CHARS) -> None:
        self.variations = max(1, variations)
        self.max_chars = max_chars  # the window may set it from the status label's width
        self._clock = clock
        self.started = clock()
        self.stage = ""
        self.variation = 0
        self._stage_frac = 0.0
        self._done = 0
        self._total = 0
        self._detail = ""
        self._t0 = self.started
        self._done0 = 0
        self.rate = 0.0

    def on_stage(self, ev: Stage) -> Snapshot:
        self.stage, self.variation = ev.name, ev.variation
        self._stage_frac, self._done, self._total, self._detail = 0.0, 0, 0, ""
        self._t0, self._done0, self.rate = self._clock(), 0, 0.0
        return self.snapshot()

    def on_progress(self, ev: Progress) -> Snapshot:
        if ev.stage != self.stage:
            self.stage = ev.stage
            self._t0, self._done0 = self._clock(), ev.done
        self._done, self._total, self._detail = ev.done, ev.total, ev.detail
        self._stage_frac = min(1.0, ev.done / ev.total) if ev.total else 0.0
        dt = self._clock() - self._t0
        if dt > 0 and ev.done > self._done0:
            self.rate = (ev.done - self._done0) / dt
        return self.snapshot()

    def fraction(self) -> float:
        before = sum(STAGE_WEIGHTS[s] for s in STAGE_ORDER[:STAGE_ORDER.index(self.stage)]) \
            if self.stage in STAGE_WEIGHTS else 0.0
        # the pipeline runs stage-major; a stage without a variation works on all of them at once
        share = self._stage_frac if self.variation is None else (self.variation + self._stage_frac) / self.variations
        within = STAGE_WEIGHTS.get(self.stage, 0.0) * share
        return min(1.0, before + within)

    def eta(self) -> float | None:
        frac = self.fraction()
        elapsed = self._clock() - self.started
        if frac < 0.02 or elapsed < 1.0:
            return None
        overall = elapsed * (1 - frac) / frac
        if self.rate > 0 and self._total:
            stage_left = (self._total - self._done) / self.rate
            return max(overall, stage_left)
        return overall

    def _units(self) -> list[str]:
        """'pass 8 of 62', '1,234 of ~7,235 tokens · 52 tok/s'; empty before the first report."""
        if self._detail:  # a remote server's own words for its phase (its progress is a percent)
            return [self._detail]
        if not self._total:
            return []
        prefix, noun = UNITS.get(self.stage, ("", ""))
        approx = "~" if self.stage == BACKBONE else ""
        counted = f"{prefix}{self._done:,} of {approx}{self._total:,}" + (f" {noun}" if noun else "")
        if self.stage == BACKBONE and self.rate > 0:
            return [counted, f"{format_rate(self.rate)} tok/s"]
        return [counted]

    def snapshot(self) -> Snapshot:
        label = STAGE_LABELS.get(self.stage, self.stage.replace("_", " ").capitalize() or "Starting")
        if self.variations > 1 and self.variation is not None:
            label = f"{label} (song {self.variation + 1} of {self.variations})"
        fraction = self.fraction()
        percent = int(fraction * 100)
        units = self._units()
        eta = self.eta()
        eta_text = [format_eta(eta, fraction)] if eta is not None else []
        detail = _join(label, units, [f"{percent}% overall", *eta_text])
        # shorter and shorter: no speed, a bare percent, no units, no ETA; label and percent stay
        for text in (detail, _join(label, units[:1], [f"{percent}% overall", *eta_text]),
                     _join(label, units[:1], [f"{percent}%", *eta_text]), _join(label, [], [f"{percent}%", *eta_text]),
                     _join(label, [], [f"{percent}%"])):
            if len(text) <= self.max_chars:
                return Snapshot(percent, text, detail)
        return Snapshot(percent, text[:self.max_chars - 1] + "…", detail)


def _join(label: str, units: list[str], rest: list[str]) -> str:
    head = f"{label} — {units[0]}" if units else f"{label}…"
    return " · ".join([head, *units[1:], *rest])
