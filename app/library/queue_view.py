"""The queue's rows at the top of the library: the running song with its progress, Rough Preview and
Cancel; waiting songs with Remove; songs held from last time (or stopped by a problem) with Run and
Discard. Each row is a real widget (buttons a keyboard and VoiceOver can reach) placed over the
list row by ``QueueRows``; the list's delegate paints nothing there."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QListView, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.library.model import LibraryModel
from app.library.queue_store import QUEUED, RUNNING, QueuedSong

ROUGH_TIP = ("A rough preview of the song so far, from the model's first two codebooks only; "
             "the finished song sounds fuller. It grows while the song is written.")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class QueueRow(QWidget):
    """One queued, running or held song. Signals carry the queue id."""

    play_preview = Signal(int)
    cancel = Signal(int)
    remove = Signal(int)
    run = Signal(int)

    def __init__(self, item: QueuedSong, place: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("queueRow")
        card = QFrame(self, objectName="queueCard")  # inset like a song row's highlight
        card.setProperty("state", item.state)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 3, 6, 3)
        outer.addWidget(card)
        self.item = item
        self.title = QLabel(item.title, objectName="queueTitle")
        self.title.setToolTip(item.title)
        self.status = QLabel(objectName="hint")
        self.progress = QProgressBar(objectName="progressBar", textVisible=False)
        self.progress.setRange(0, 100)
        text = QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.title)
        text.addWidget(self.status)
        text.addWidget(self.progress)
        lay = QHBoxLayout(card)
        lay.setContentsMargins(10, 4, 8, 4)
        lay.addLayout(text, 1)
        self.buttons: dict[str, QPushButton] = {}
        if item.state == RUNNING:
            self.status.setText("Starting…")
            self._button("preview", "▶ Rough Preview", self.play_preview, ROUGH_TIP).setEnabled(False)
            self._button("cancel", "Cancel", self.cancel, "Stop making this song; the next one starts")
        elif item.state == QUEUED:
            self.status.setText(f"Waiting · {ordinal(place)} in line")
            self._button("remove", "Remove", self.remove, "Take this song out of the queue")
        else:
            self.status.setText(item.note or "Waiting")
            self.status.setToolTip(item.note)
            self._button("run", "Run", self.run, "Make this song (it joins the end of the queue)")
            self._button("discard", "Discard", self.remove, "Forget this request")
        for button in self.buttons.values():
            lay.addWidget(button)
        self.progress.setVisible(item.state == RUNNING)  # only once it has a parent: never a window of its own

    def _button(self, key: str, text: str, signal: object, tip: str) -> QPushButton:
        button = QPushButton(text, objectName=f"queue_{key}")
        button.setToolTip(tip)
        button.setAccessibleName(f"{text.strip('▶ ')}: {self.item.title}")
        button.clicked.connect(lambda _=False: signal.emit(self.item.id))
        self.buttons[key] = button
        return button

    def set_progress(self, percent: int, text: str) -> None:
        self.progress.setValue(percent)
        self.status.setText(text)

    def set_preview_playing(self, playing: bool) -> None:
        button = self.buttons.get("preview")
        if button is not None:
            button.setText("❚❚ Rough Preview" if playing else "▶ Rough Preview")

    def set_preview_ready(self, seconds: float) -> None:
        button = self.buttons.get("preview")
        if button is not None:
            button.setEnabled(True)
            m, s = divmod(int(seconds), 60)
            button.setToolTip(f"{ROUGH_TIP} ({m}:{s:02d} so far)")


class QueueRows(QObject):
    """Keeps a QueueRow over each queue row of ``view``, rebuilt whenever the model resets."""

    play_preview = Signal(int)
    cancel = Signal(int)
    remove = Signal(int)
    run = Signal(int)

    def __init__(self, view: QListView, model: LibraryModel) -> None:
        super().__init__(view)
        self.view, self.model = view, model
        self.rows: dict[int, QueueRow] = {}
        self._progress: tuple[int, str] | None = None
        self._preview_s: float | None = None
        self._playing: int | None = None  # queue id whose preview plays
        model.modelReset.connect(self.rebuild)
        self.rebuild()

    def rebuild(self) -> None:
        self.rows = {}
        place = 0
        for row in range(self.model.queue_count()):
            item = self.model.queue_item(row)
            place += item.state == QUEUED
            widget = QueueRow(item, place, self.view.viewport())
            for name in ("play_preview", "cancel", "remove", "run"):
                getattr(widget, name).connect(getattr(self, name))
            self.view.setIndexWidget(self.model.index(row), widget)
            self.rows[item.id] = widget
            if item.state == RUNNING:
                if self._progress is not None:
                    widget.set_progress(*self._progress)
                if self._preview_s is not None:
                    widget.set_preview_ready(self._preview_s)
                widget.set_preview_playing(self._playing == item.id)

    def running(self) -> QueueRow | None:
        return next((w for w in self.rows.values() if w.item.state == RUNNING), None)

    def on_started(self) -> None:
        self._progress, self._preview_s = None, None

    def on_progress(self, percent: int, text: str) -> None:
        self._progress = (percent, text)
        row = self.running()
        if row is not None:
            row.set_progress(percent, text)

    def on_preview_playing(self, item_id: int | None) -> None:
        self._playing = item_id
        for key, row in self.rows.items():
            row.set_preview_playing(key == item_id)

    def on_preview(self, item_id: int, seconds: float) -> None:
        self._preview_s = seconds
        row = self.rows.get(item_id)
        if row is not None:
            row.set_preview_ready(seconds)
