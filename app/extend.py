"""Extend… and Regenerate From Here: the library's song actions that continue a song (issue 11, SPEC §12).

Both read the song's sidecar and codes on the GUI thread (a 9-minute song's codes are 1.5 MB:
about 1 ms), build the request with engine.extend's rules and submit it through the one
generation controller, so the new song gets the usual progress, cancel and memory check. The new
song's sidecar names its parent; the library shows "extended from …" on its row.

New lyrics for the new part follow the song's own lyrics in the prompt (engine.extend.combine_lyrics):
the model reads the lyrics as the whole song's, in order, and the kept part already sings the
original lines, so the new lines are what it sings next.
"""

from __future__ import annotations

from typing import Any, Protocol

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QLabel, QPlainTextEdit, QSpinBox,
                               QVBoxLayout, QWidget)

from app.library.store import SongRecord
from app.library.view import format_length
from engine.errors import KhalaError
from engine.extend import (EXPECTED_EXTRA_MINUTES, FRAMES_PER_SECOND, SongSource, combine_lyrics,
                           continuation_request, cut_frame, default_minutes, extended_minutes, format_time,
                           open_song)
from engine.request import DURATION_RANGE, SongRequest


class ExtendHost(Protocol):
    controller: Any
    player: Any
    list: Any

    def show_message(self, text: str, level: str = "") -> None: ...


class ExtendDialog(QDialog):
    """Minutes to add and, optionally, lyrics for the new part."""

    def __init__(self, title: str, seconds: float, instrumental: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("extendDialog")
        self.setWindowTitle("Extend Song")
        self.seconds = seconds
        self.intro = intro = QLabel(f"“{title}” is {format_length(seconds)} long. The new song keeps all of it "
                                    "and goes on; the original stays in your library.")
        intro.setWordWrap(True)
        self.minutes = QSpinBox()
        self.minutes.setObjectName("extendMinutes")
        self.minutes.setRange(1, DURATION_RANGE[1])
        self.minutes.setValue(1)
        self.minutes.setSuffix(" min")
        self.minutes.setAccessibleName("Minutes to add")
        self.lyrics = QPlainTextEdit()
        self.lyrics.setObjectName("extendLyrics")
        self.lyrics.setAccessibleName("Lyrics for the new part")
        self.lyrics.setPlaceholderText("Optional. Sung after the song's own lyrics"
                                       + (" (the song is instrumental: lyrics make the new part sung)."
                                          if instrumental else "."))
        self.lyrics.setMinimumHeight(110)
        self.estimate = QLabel()
        self.estimate.setObjectName("hint")
        self.minutes.valueChanged.connect(self._update_estimate)
        form = QFormLayout()
        form.addRow("Add about", self.minutes)
        form.addRow("New lyrics", self.lyrics)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.extend_button = buttons.addButton("Extend", QDialogButtonBox.ButtonRole.AcceptRole)
        self.extend_button.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addLayout(form)
        lay.addWidget(self.estimate)
        lay.addWidget(buttons)
        self.setMinimumWidth(420)
        self._update_estimate()

    def total_minutes(self) -> int:
        return extended_minutes(self.seconds, self.minutes.value())

    def _update_estimate(self) -> None:
        total = self.total_minutes()
        seconds = (total + EXPECTED_EXTRA_MINUTES) * 60
        self.estimate.setText(f"About {format_length(seconds)} in all ({format_length(seconds - self.seconds)} more): "
                              f"the model is asked for a {total}-minute song, as when generating one.")


def open_source(w: ExtendHost, rec: SongRecord | None) -> SongSource | None:
    if rec is None:
        w.show_message("Select a song in the library first.", "error")
        return None
    try:
        return open_song(rec.audio_path)
    except KhalaError as exc:
        w.show_message(str(exc), "error")
        return None


def extend_song(w: ExtendHost, rec: SongRecord | None, add_minutes: int, new_lyrics: str = "") -> bool:
    """Continue ``rec`` at its end for about ``add_minutes``; False (and a message) when it did not start."""
    source = open_source(w, rec)
    if source is None:
        return False
    overrides: dict[str, Any] = {}
    if new_lyrics.strip():
        own = "" if source.request.get("instrumental") else str(source.request.get("lyrics") or "")
        overrides["lyrics"] = combine_lyrics(own, new_lyrics)
    request = continuation_request(source.request, overrides, minutes=extended_minutes(source.seconds, add_minutes))
    return _submit(w, rec, source, source.frames, request)


def regenerate_from(w: ExtendHost, rec: SongRecord | None, seconds: float) -> bool:
    """Keep ``rec`` up to ``seconds`` and write a new rest with the song's own settings and a new seed."""
    source = open_source(w, rec)
    if source is None:
        return False
    try:
        cut = cut_frame(seconds, source.frames)
    except KhalaError as exc:
        w.show_message(str(exc), "error")
        return False
    request = continuation_request(source.request, {}, minutes=default_minutes(source, cut))
    return _submit(w, rec, source, cut, request)


def player_position(w: ExtendHost, rec: SongRecord | None) -> float | None:
    """Where the player is in ``rec`` (seconds), or None when another song (or none) is loaded."""
    if rec is None or w.player.song_id != rec.id:
        return None
    return float(w.player.position)


def regenerate_here(w: ExtendHost, rec: SongRecord | None) -> bool:
    seconds = player_position(w, rec)
    if rec is not None and seconds is None:
        w.show_message(f"Play “{rec.title}” and pause where the new version should start, then choose "
                       "Regenerate From Here.", "error")
        return False
    return regenerate_from(w, rec, seconds or 0.0)


def open_extend_dialog(w: ExtendHost, rec: SongRecord | None) -> ExtendDialog | None:
    source = open_source(w, rec)
    if source is None:
        return None
    dialog = ExtendDialog(rec.title, source.seconds, bool(source.request.get("instrumental")), w)
    dialog.accepted.connect(lambda: extend_song(w, rec, dialog.minutes.value(), dialog.lyrics.toPlainText()))
    dialog.open()
    return dialog


def _submit(w: ExtendHost, rec: SongRecord, source: SongSource, cut: int, request: SongRequest) -> bool:
    try:
        request.validate()
    except KhalaError as exc:
        w.show_message(f"“{rec.title}” cannot be continued: {exc}", "error")
        return False
    if not w.controller.submit(request, continuation=source.continuation(cut, rec.title)):
        return False
    what = "Extending" if cut == source.frames else f"Regenerating from {format_time(cut / FRAMES_PER_SECOND)}:"
    w.show_message(f"{what} “{rec.title}”…")
    show_cut(w, rec.id, cut / source.frames)
    return True


def show_cut(w: ExtendHost, song_id: int, fraction: float) -> None:
    """A cut marker on the song's waveform in the library while its continuation is being made."""
    w.list.delegate.cut_marks[song_id] = fraction
    w.list.viewport().update()

    def done(busy: bool) -> None:
        if not busy:
            w.controller.busy_changed.disconnect(done)
            w.list.delegate.cut_marks.pop(song_id, None)
            w.list.viewport().update()

    w.controller.busy_changed.connect(done)
