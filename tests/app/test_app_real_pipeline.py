"""Compose → generate → library, and cancel mid-backbone, with the real engine.pipeline on the tiny
checkpoint."""

from __future__ import annotations

import importlib.util

import pytest
import soundfile

from conftest import fill_compose


def _pipeline_importable() -> bool:
    try:
        import engine.pipeline  # noqa: F401
    except ImportError:
        return False
    return True


pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None or not _pipeline_importable(),
                                reason="engine.pipeline is not complete yet")


def test_real_pipeline_song_lands_in_library(qtbot, settings, tiny_weights):
    from app.generation import real_pipeline_factory
    from conftest import make_window

    settings.max_tokens = 48
    w, _ = make_window(qtbot, settings, tiny_weights, real_pipeline_factory)
    fill_compose(w)
    w.compose.advanced.fixed_seed.setChecked(True)
    w.compose.advanced.seed.setValue(5)
    stages = []
    w.job_started = True
    with qtbot.waitSignal(w.song_added, timeout=120_000) as added:
        w.generate()
        w.job.event.connect(lambda ev: stages.append(type(ev).__name__))
    qtbot.waitUntil(lambda: w.job is None, timeout=30_000)
    rec = w.library.get(added.args[0])
    info = soundfile.info(str(rec.audio_path))
    assert info.samplerate == 44_100 and info.channels == 2 and info.frames > 0
    assert rec.seed == 5 and rec.status == "ready" and rec.request["max_tokens"] == 48
    assert {"load_backbone", "backbone", "superres", "decode"} <= set(rec.timings)  # the real stage timings
    assert all(rec.timings[stage] > 0 for stage in ("backbone", "superres", "decode"))
    assert "Stage" in stages and "Progress" in stages
    assert w.model.rowCount() == 1 and w.generate_button.isEnabled()


def test_real_pipeline_cancel_during_backbone_leaves_nothing(qtbot, settings, tiny_weights):
    from app.generation import real_pipeline_factory
    from conftest import make_window
    from engine.events import Progress, Stage

    settings.max_tokens = 20_000  # far more than the test lets it write
    w, _ = make_window(qtbot, settings, tiny_weights, real_pipeline_factory)
    fill_compose(w)
    seen: list[str] = []

    def on_event(ev: object) -> None:
        if isinstance(ev, Stage):
            seen.append(ev.name)
        elif isinstance(ev, Progress) and ev.stage == "backbone" and w.job and not w.job.token.cancelled:
            seen.append(f"cancel at {ev.done} of {ev.total}")
            w.cancel_generation()

    w.generate()
    w.job.event.connect(on_event)
    qtbot.waitUntil(lambda: w.job is None, timeout=120_000)
    assert seen[-2:-1] == ["backbone"] and seen[-1].startswith("cancel at"), seen
    assert "Cancelled" in w.status.text() and w.status.property("level") != "error"
    assert w.generate_button.isEnabled() and w.compose.isEnabled() and not w.progress.isVisible()
    assert w.library.songs() == [] and w.model.rowCount() == 0
    songs = settings.songs_dir
    assert not songs.exists() or list(songs.iterdir()) == []

    settings.max_tokens = 32  # the same pipeline makes the next song normally
    with qtbot.waitSignal(w.song_added, timeout=120_000):
        w.generate()
    qtbot.waitUntil(lambda: w.job is None, timeout=30_000)
    assert len(w.library.songs()) == 1 and len(list(songs.glob("*.wav"))) == 1
