"""What the status line says while a song is made: units of the stage, overall percent, speed, ETA."""

from __future__ import annotations

from app.progress import ProgressTracker, format_eta
from engine.events import Progress, Stage


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_backbone_says_tokens_speed_and_time_left():
    clock = Clock()
    tr = ProgressTracker(clock=clock, max_chars=200)
    tr.on_stage(Stage("load_backbone"))
    clock.t = 4.0
    tr.on_stage(Stage("backbone"))
    clock.t = 28.0
    snap = tr.on_progress(Progress("backbone", 1234, 7235))
    assert snap.text.startswith("Writing the song — 1,234 of ~7,235 tokens · 51 tok/s · ")
    assert f"{snap.percent}% overall" in snap.text and snap.text.endswith("about 2 min 50 s left")
    assert "/" not in snap.text.replace("tok/s", "")


def test_superres_says_pass_of_62_and_overall_percent():
    clock = Clock()
    tr = ProgressTracker(clock=clock, max_chars=200)
    tr.on_stage(Stage("superres"))
    clock.t = 2.0
    snap = tr.on_progress(Progress("superres", 8, 62))
    assert snap.text.startswith("Adding detail — pass 8 of 62 · ")
    assert snap.percent > 60 and f"· {snap.percent}% overall" in snap.text


def test_variations_and_stage_without_units():
    tr = ProgressTracker(variations=3, clock=Clock())
    snap = tr.on_stage(Stage("decode", variation=1))
    assert snap.text.startswith("Rendering audio (song 2 of 3)…")
    assert "% overall" in snap.text


def test_eta_is_rounded_and_never_zero():
    assert format_eta(0.4) == "almost done"
    assert format_eta(42) == "about 40 s left"
    assert format_eta(95) == "about 1 min 40 s left"
    assert format_eta(61) == "about 1 min left"
    assert format_eta(1500) == "about 25 min left"
    assert format_eta(4000) == "about 1 h 07 min left"
