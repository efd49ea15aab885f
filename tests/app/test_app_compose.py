"""Compose panel: the tag search, the folded catalogue, and nothing important below the fold."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QScrollArea, QWidget

from app.compose.catalogue import load_catalogue


def test_search_enter_adds_the_best_match_and_free_tags(qtbot, fake_window):
    picker = fake_window.compose.picker
    assert not picker.browsing
    qtbot.keyClicks(picker.search, "synthw")
    assert picker.browsing  # typing opens the catalogue on the matches
    qtbot.keyClick(picker.search, Qt.Key.Key_Return)
    assert picker.tags() == ["Synthwave"] and picker.search.text() == "" and not picker.browsing
    qtbot.keyClicks(picker.search, "piano")
    qtbot.keyClick(picker.search, Qt.Key.Key_Return)
    qtbot.keyClicks(picker.search, "Harbour Dub")
    qtbot.keyClick(picker.search, Qt.Key.Key_Return)
    assert picker.tags() == ["Synthwave", "Piano", "Harbour Dub"]
    assert fake_window.compose.prompt.toPlainText() == "Synthwave, Piano, Harbour Dub"


def test_browse_shows_the_catalogue_with_counts(qtbot, fake_window):
    picker = fake_window.compose.picker
    picker.set_tags(["Pop", "Piano"])
    qtbot.mouseClick(picker.browse, Qt.MouseButton.LeftButton)
    assert picker.browsing and picker.tabs.count() == 4
    assert picker.tabs.tabText(0).endswith("(1)") and picker.tabs.tabText(1).endswith("(1)")


def test_catalogue_has_no_case_duplicates():
    for cat in load_catalogue():
        lowered = [t.lower() for t in cat.tags]
        assert len(lowered) == len(set(lowered)), cat.label


def _visible_in(widget: QWidget, scroll: QScrollArea) -> bool:
    top = widget.mapTo(scroll.viewport(), QPoint(0, 0)).y()
    return widget.isVisible() and top >= 0 and top + widget.height() <= scroll.viewport().height()


def test_main_controls_are_above_the_fold(qtbot, fake_window):
    w = fake_window
    w.resize(1240, 800)
    qtbot.wait(50)
    scroll = w.findChild(QScrollArea)
    for name in ("promptEdit", "tagPicker", "durationSelector", "lyricsEdit"):
        assert _visible_in(w.findChild(QWidget, name), scroll), name
    assert _visible_in(w.compose.advanced_toggle, scroll) and w.generate_button.isVisible()


def test_smallest_window_fits_the_compose_panel(qtbot, fake_window):
    w = fake_window
    w.resize(w.minimumSize())
    qtbot.wait(50)
    scroll = w.findChild(QScrollArea)
    assert scroll.viewport().width() >= w.compose.minimumSizeHint().width()
    assert w.generate_button.isVisible()
