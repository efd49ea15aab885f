"""Lyrics editor with section helpers, text-file drop, and a live token count against the
prompt cap that says how many lyric lines a cut would drop."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QMimeData, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.compose.tokens import TokenCounter
from engine.errors import PromptError
from engine.prompt.template import read_lyrics_file
from engine.request import SongRequest

SECTIONS = ("Intro", "Verse", "Pre-Chorus", "Chorus", "Bridge", "Outro")
NOT_A_LOCAL_FILE = "Only a text file from this computer can be dropped on the lyrics."


def lines_text(n: int) -> str:
    return f"{n} lyric line" + ("" if n == 1 else "s")


class LyricsEdit(QPlainTextEdit):
    """The text box. A dropped or pasted file (a URL in the data) is loaded as lyrics by
    ``on_file`` with the rules of ``--lyrics-file``; its URL or path is never inserted as text.
    Plain dragged or pasted text is inserted as usual."""

    def __init__(self, on_file: Callable[[Path], bool], on_refused: Callable[[str], None]) -> None:
        super().__init__()
        self._on_file, self._on_refused = on_file, on_refused

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return source.hasUrls() or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        if not source.hasUrls():
            super().insertFromMimeData(source)
            return
        files = [u.toLocalFile() for u in source.urls() if u.isLocalFile()]
        if not files:
            self._on_refused(NOT_A_LOCAL_FILE)
            return
        if len(files) > 1:
            self._on_refused(f"Drop one lyrics file at a time ({len(files)} were dropped).")
            return
        self._on_file(Path(files[0]))


class LyricsEditor(QWidget):
    counted = Signal(dict)
    message = Signal(str)  # a problem to show (a file that cannot be loaded)

    def __init__(self, counter: TokenCounter, request_fn: Callable[[], SongRequest],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.counter = counter
        self._request_fn = request_fn
        self.last_count: dict[str, int] = {}
        self.edit = LyricsEdit(self.load_file, self.message.emit)
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

    def load_file(self, path: Path) -> bool:
        """Replace the lyrics with the text of ``path``, read as ``khala --lyrics-file`` reads it
        (UTF-8, BOM allowed, taken literally). The replacement is one undo step, so the previous
        lyrics are never lost. False, with ``message`` emitted and the box unchanged, on failure."""
        try:
            text = read_lyrics_file(path)
        except PromptError as exc:
            self.message.emit(str(exc))
            return False
        cursor = self.edit.textCursor()
        cursor.beginEditBlock()
        cursor.select(QTextCursor.SelectionType.Document)
        cursor.insertText(text)
        cursor.endEditBlock()
        self.edit.setTextCursor(cursor)
        return True

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
        self.count_label.setText(count_text(c, self.counter.exact))
        over = c["backbone"] > c["backbone_cap"] or c["superres"] > c["superres_cap"]
        used, cap = binding(c)
        self.count_label.setProperty("level", "error" if over else "warn" if used > 0.9 * cap else "")
        self.count_label.style().unpolish(self.count_label)
        self.count_label.style().polish(self.count_label)
        self.counted.emit(c)
        return c


def binding(c: dict[str, int]) -> tuple[int, int]:
    """(tokens, cap) of the prompt closest to its cap: in tag mode both prompts are the same and
    the super-res cap (2,048) binds first."""
    return max((c["backbone"], c["backbone_cap"]), (c["superres"], c["superres_cap"]), key=lambda uc: uc[0] / uc[1])


def cut_text(c: dict[str, int]) -> str:
    """What a cut would drop, for a count over its cap."""
    n = c.get("dropped_lines", 0)
    if n:
        return f"the last {lines_text(n)} would be cut. Shorten the lyrics."
    return "the style text would be cut. Shorten the tags or description."


def count_text(c: dict[str, int], exact: bool) -> str:
    approx = "" if exact else "≈ "
    used, cap = binding(c)
    if c["backbone"] > c["backbone_cap"] or c["superres"] > c["superres_cap"]:
        return f"{approx}{used:,} / {cap:,} prompt tokens — too long: {cut_text(c)}"
    if used > 0.9 * cap:
        return f"{approx}{used:,} / {cap:,} prompt tokens — close to the limit"
    return f"{approx}{used:,} / {cap:,} prompt tokens"
