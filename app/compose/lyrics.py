"""Lyrics editor with section helpers and a live token count against the prompt cap."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.compose.tokens import TokenCounter
from engine.request import SongRequest

SECTIONS = ("Intro", "Verse", "Pre-Chorus", "Chorus", "Bridge", "Outro")


class LyricsEditor(QWidget):
    counted = Signal(dict)

    def __init__(self, counter: TokenCounter, request_fn: Callable[[], SongRequest],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.counter = counter
        self._request_fn = request_fn
        self.last_count: dict[str, int] = {}
        self.edit = QPlainTextEdit()
        self.edit.setObjectName("lyricsEdit")
        self.edit.setPlaceholderText("[Verse]\nWrite your lyrics here, one line per sung line…\n\n[Chorus]\n…")
        self.edit.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.GeneralFont))
        self.edit.setMinimumHeight(110)
        self.edit.textChanged.connect(self.schedule_count)
        self.title = QLabel("Lyrics", objectName="sectionTitle")
        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        buttons.addWidget(self.title)
        buttons.addStretch(1)
        for name in SECTIONS:
            button = QPushButton(f"[{name}]")
            button.setObjectName("sectionButton")
            button.setToolTip(f"Insert a [{name}] section heading")
            button.clicked.connect(lambda _=False, n=name: self.insert_section(n))
            buttons.addWidget(button)
        self.count_label = QLabel()
        self.count_label.setObjectName("tokenCount")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)
        lay.addLayout(buttons)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.count_label)
        self._timer = QTimer(self, singleShot=True, interval=250)
        self._timer.timeout.connect(self.update_count)

    def text(self) -> str:
        return self.edit.toPlainText()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)

    def insert_section(self, name: str) -> None:
        cursor = self.edit.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.StartOfBlock)
        before = "" if cursor.atStart() or not cursor.block().previous().text().strip() else "\n"
        line = cursor.block().text()
        cursor.insertText(f"{before}[{name}]\n" if line.strip() else f"{before}[{name}]")
        if not line.strip():
            cursor.insertText("\n")
        self.edit.setTextCursor(cursor)
        self.edit.setFocus()

    def schedule_count(self) -> None:
        self._timer.start()

    def over_cap(self) -> bool:
        c = self.update_count()
        return c["backbone"] > c["backbone_cap"] or c["superres"] > c["superres_cap"]

    def update_count(self) -> dict[str, int]:
        c = self.counter.count(self._request_fn())
        self.last_count = c
        approx = "" if self.counter.exact else "≈ "
        used, cap = c["backbone"], c["backbone_cap"]
        if c["backbone"] > c["backbone_cap"] or c["superres"] > c["superres_cap"]:
            which = "super-res" if c["superres"] > c["superres_cap"] else "prompt"
            self.count_label.setText(f"{approx}{used:,} / {cap:,} prompt tokens — too long: the end of the {which} "
                                     "would be cut. Shorten the lyrics.")
            self.count_label.setProperty("level", "error")
        elif used > 0.9 * cap:
            self.count_label.setText(f"{approx}{used:,} / {cap:,} prompt tokens — close to the limit")
            self.count_label.setProperty("level", "warn")
        else:
            self.count_label.setText(f"{approx}{used:,} / {cap:,} prompt tokens")
            self.count_label.setProperty("level", "")
        self.count_label.style().unpolish(self.count_label)
        self.count_label.style().polish(self.count_label)
        self.counted.emit(c)
        return c
