"""The memory check before a generation: inline warning, a non-blocking Generate Anyway / Cancel."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from conftest import fill_compose

WARNING = "This song needs about 20.5 GB of memory at its peak (decoder); this machine has 8.0 GB."


def _button(box: QMessageBox, text: str):
    return next(b for b in box.buttons() if b.text() == text)


def test_warning_is_inline_and_generate_anyway_starts(qtbot, fake_window, monkeypatch):
    w = fake_window
    asked = []
    monkeypatch.setattr("app.memory_check.memory_warning",  # the song's own check (the preview's is not asked)
                        lambda request, folder, preview=False, **kw: (None if preview else asked.append(request)) or WARNING)
    fill_compose(w)
    w.generate()
    assert w.job is None and w.status.text() == WARNING and w.status.property("level") == "warn"
    box = w.memory_box
    assert box is not None and box.isVisible() and not box.isModal()
    assert asked and asked[0].tags == "Pop, Piano"
    with qtbot.waitSignal(w.song_added, timeout=15_000):
        qtbot.mouseClick(_button(box, "Generate Anyway"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.job is None, timeout=10_000)
    assert w.memory_box is None and w.model.rowCount() == 1 and len(asked) == 1


def test_cancel_in_the_warning_starts_nothing(qtbot, fake_window, monkeypatch):
    w = fake_window
    monkeypatch.setattr("app.memory_check.memory_warning", lambda request, folder, **kw: WARNING)
    fill_compose(w)
    w.generate()
    qtbot.mouseClick(w.memory_box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.memory_box is None, timeout=5_000)
    assert w.job is None and w.pipelines == [] and "Not started" in w.status.text()
    assert w.generate_button.isEnabled()


def test_no_warning_starts_at_once(qtbot, fake_window):
    fill_compose(fake_window)
    with qtbot.waitSignal(fake_window.song_added, timeout=15_000):
        fake_window.generate()
        assert fake_window.memory_box is None and fake_window.job is not None


def test_helper_judges_the_model_in_the_folder(real_memory_check, tiny_weights, monkeypatch):
    from engine import memory
    from engine.request import SongRequest

    monkeypatch.setattr(memory, "available_memory_bytes", lambda device: 4 * memory.GIB)
    request = SongRequest(tags="Pop", minutes=3)
    released = real_memory_check.memory_warning(request, None)
    assert released and "GB of memory" in released
    assert real_memory_check.memory_warning(request, tiny_weights) is None


def test_helper_never_stops_a_song_when_the_estimate_fails(real_memory_check, monkeypatch):
    from engine import memory
    from engine.request import SongRequest

    def broken(*a, **k):
        raise RuntimeError("estimate failed")

    monkeypatch.setattr(memory, "memory_warning", broken)
    assert real_memory_check.memory_warning(SongRequest(tags="Pop"), None) is None


def test_previews_are_turned_off_when_only_they_would_not_fit(qtbot, fake_window, monkeypatch):
    """A song that fits, but not with the preview's decoder beside the backbone, starts without a
    question and without previews, and says why."""
    from conftest import fill_compose

    monkeypatch.setattr("app.memory_check.memory_warning",
                        lambda request, folder, preview=False, **kw: WARNING if preview else None)
    logs: list[str] = []
    fake_window.controller.log.connect(logs.append)
    fill_compose(fake_window)
    fake_window.generate()
    assert fake_window.memory_box is None and fake_window.job is not None
    qtbot.waitUntil(lambda: fake_window.job is None, timeout=15_000)
    assert fake_window.pipelines[0].options[0].get("preview_every") is None
    assert any("Rough previews are off" in text for text in logs)
