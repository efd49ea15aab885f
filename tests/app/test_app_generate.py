"""Compose → generate → library, cancel, and inline messages for bad input (fake pipeline)."""

from __future__ import annotations

from pathlib import Path

import soundfile
from PySide6.QtCore import Qt

from conftest import fill_compose


def test_generate_adds_playable_song(qtbot, fake_window):
    w = fake_window
    fill_compose(w)
    assert w.model.rowCount() == 0
    with qtbot.waitSignal(w.song_added, timeout=15_000) as added:
        qtbot.mouseClick(w.generate_button, Qt.MouseButton.LeftButton)
        assert w.generate_button.isEnabled() and w.compose.isEnabled() and w.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    assert w.model.rowCount() == 1
    rec = w.library.get(added.args[0])
    data, rate = soundfile.read(str(rec.audio_path))
    assert rate == 44_100 and data.shape == (int(44_100 * 1.5), 2) and abs(data).max() > 0.1
    assert rec.sidecar_path.is_file() and rec.seed == 1234 and rec.tags == "Pop, Piano"
    assert len(rec.peaks) > 0 and rec.duration_s == 1.5
    assert w.pipelines[0].requests[0].lyrics == "[Verse]\nhello world"
    assert w.generate_button.isEnabled() and not w.cancel_button.isEnabled()
    assert w.last_notification and "Song ready" in w.last_notification[0]
    assert list(Path(rec.audio_path).parent.glob("*.part")) == []


def test_shortcut_and_use_these_settings(qtbot, fake_window):
    from app import menus

    w = fake_window
    fill_compose(w, tags=("Jazz",), instrumental=True)
    w.compose.advanced.fixed_seed.setChecked(True)
    w.compose.advanced.seed.setValue(77)
    with qtbot.waitSignal(w.song_added, timeout=15_000):
        qtbot.keyClick(w, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    fill_compose(w, tags=("Rock",))
    w.list.setCurrentIndex(w.model.index(0))
    menus.use_settings(w)
    r = w.compose.request_unchecked()
    assert r.tags == "Jazz" and r.instrumental and r.seed == 77


def test_cancel_mid_generation_leaves_nothing(qtbot, fake_window, settings):
    w = fake_window
    w.factory.step_s = 0.05
    fill_compose(w)
    w.generate()
    qtbot.waitUntil(lambda: "%" in w.status.text(), timeout=10_000)
    qtbot.keyClick(w, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    assert "Cancelled" in w.status.text()
    assert w.generate_button.isEnabled() and w.compose.isEnabled()
    assert w.model.rowCount() == 0 and w.library.songs() == []
    assert list(Path(settings.songs_dir).iterdir()) == []


def test_tags_mode_without_tag_is_an_inline_message(qtbot, fake_window):
    w = fake_window
    fill_compose(w, tags=())
    w.generate()
    assert w.job is None and "at least one tag" in w.status.text()
    assert w.status.property("level") == "error"


def test_overlong_lyrics_warns_and_blocks(qtbot, fake_window):
    w = fake_window
    fill_compose(w, lyrics="[Verse]\n" + "a fairly long line of lyrics that goes on\n" * 600)
    w.compose.lyrics.update_count()
    assert "too long" in w.compose.lyrics.count_label.text()
    w.generate()
    assert w.job is None and "too long" in w.status.text()


def test_unusable_songs_folder_is_an_inline_message(qtbot, fake_window, settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings.songs_dir = blocker / "songs"
    fill_compose(fake_window)
    fake_window.generate()
    assert fake_window.job is None and "songs folder" in fake_window.status.text()


def test_engine_error_is_a_message_not_a_traceback(qtbot, fake_window):
    from engine.errors import WeightsError

    def broken(folder):
        raise WeightsError("khala_backbone.safetensors is truncated.")

    fake_window.controller.provider._factory = broken
    fill_compose(fake_window)
    fake_window.generate()
    qtbot.waitUntil(lambda: fake_window.job is None, timeout=10_000)
    assert fake_window.status.text() == "khala_backbone.safetensors is truncated."
    assert "Traceback" not in fake_window.status.text()


def test_a_library_that_fails_after_prepare_is_a_message_and_the_song_stays(qtbot, fake_window, monkeypatch):
    from app.library.store import LibraryError

    def broken(record):
        raise LibraryError("the disk holding the library went read-only")

    monkeypatch.setattr(fake_window.library, "add", broken)
    fill_compose(fake_window)
    fake_window.generate()
    qtbot.waitUntil(lambda: fake_window.job is None, timeout=15_000)
    assert "could not list it: the disk holding the library went read-only" in fake_window.status.text()
    assert fake_window.status.property("level") == "error"
    saved = list(fake_window.settings.songs_dir.glob("*.wav"))
    assert len(saved) == 1 and saved[0].with_name(saved[0].name + ".json").is_file()  # relaunch adds it back
