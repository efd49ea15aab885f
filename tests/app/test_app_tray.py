"""Menu-bar actions: quick generate starts a job, recent songs play, open window; quit asks."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from conftest import fill_compose


def test_quick_generate_recent_and_open_window(qtbot, fake_window):
    w = fake_window
    tray = w.tray
    assert [a.text() for a in tray.menu.actions() if a.text()][:1] == ["Quick Generate…"]
    tray.refresh_recent()
    assert [a.text() for a in tray.recent_menu.actions()] == ["No songs yet"]
    w.hide()
    tray.quick_action.trigger()
    dialog = tray.dialog
    dialog.accept()
    assert dialog.isVisible()  # no tags yet: the dialog says so and stays
    assert "at least one tag" in dialog.error.text()
    dialog.tags.setCurrentText("Lo-fi, Piano")
    with qtbot.waitSignal(w.song_added, timeout=15_000):
        dialog.accept()
        assert w.job is not None and tray.quick_action.isEnabled()  # it adds to the same queue
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    request = w.pipelines[0].requests[0]
    assert request.tags == "Lo-fi, Piano" and request.instrumental and request.minutes == 2
    titles = [a.text() for a in tray.recent_menu.actions()]
    assert titles == ["▶ Lo-fi · Piano"]
    assert not w.isVisible()
    tray.recent_menu.actions()[0].trigger()
    assert w.player.song_id is not None and w.player_bar.title.text() == "Lo-fi · Piano"
    w.player.stop()
    tray.open_action.trigger()
    assert w.isVisible()


def test_quit_during_generation_asks_then_cancels(qtbot, fake_window, settings, monkeypatch):
    w = fake_window
    w.factory.step_s = 0.05
    fill_compose(w)
    w.generate()
    qtbot.waitUntil(lambda: "%" in w.status.text(), timeout=10_000)
    asked = []
    w.ask = lambda title, text: asked.append(text) or False
    assert w.request_quit() is False and w.job is not None
    quits = []
    monkeypatch.setattr(QApplication, "quit", lambda *a: quits.append(1))
    w.ask = lambda title, text: asked.append(text) or True
    assert w.request_quit() is True
    assert len(asked) == 2 and quits == [1] and w.job is None
    assert w.library.songs() == [] and list(settings.songs_dir.iterdir()) == []
