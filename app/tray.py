"""The menu-bar icon: quick generate (into the window's queue), recent songs, open window, quit — works
with the window closed."""

from __future__ import annotations

from typing import Any, Protocol

from PySide6.QtCore import SignalInstance
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QMenu,
                               QSpinBox, QSystemTrayIcon)

from app.compose.duration import CHIPS
from app.library.store import Library
from engine.request import SongRequest


class TrayHost(Protocol):
    """What the tray needs of the main window (described, not imported: no import cycle)."""

    library: Library
    model: Any
    compose: Any
    status: Any
    tray: Any
    song_added: SignalInstance
    busy_changed: SignalInstance

    @property
    def busy(self) -> bool: ...
    def start_generation(self, request: SongRequest, check_memory: bool = True) -> bool: ...
    def play_row(self, row: int) -> None: ...
    def request_quit(self) -> bool: ...
    def show(self) -> None: ...
    def raise_(self) -> None: ...
    def activateWindow(self) -> None: ...

RECENT = 5


class QuickGenerateDialog(QDialog):
    def __init__(self, tags: list[str], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Quick Generate")
        self.setObjectName("quickGenerateDialog")
        self.tags = QComboBox(editable=True)
        self.tags.addItems(tags)
        self.tags.setCurrentText("")
        self.tags.lineEdit().setPlaceholderText("e.g. Lo-fi, Piano, Chill")
        self.minutes = QSpinBox(suffix=" min")
        self.minutes.setRange(0, 10)
        self.minutes.setValue(CHIPS[0])
        self.instrumental = QCheckBox("Instrumental")
        self.instrumental.setChecked(True)
        self.error = QLabel(objectName="statusLabel")
        self.error.setProperty("level", "error")
        intro = QLabel("A song from the menu bar. You will get a notification when it is ready.",
                       wordWrap=True, objectName="hint")
        form = QFormLayout(self)
        form.addRow(intro)
        form.addRow("Tags", self.tags)
        form.addRow("Length", self.minutes)
        form.addRow("", self.instrumental)
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Generate")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.setMinimumWidth(380)

    def request(self, lyrics: str = "") -> SongRequest:
        return SongRequest(tags=self.tags.currentText().strip(), minutes=self.minutes.value(),
                           instrumental=self.instrumental.isChecked(), lyrics=lyrics)

    def accept(self) -> None:
        if not self.tags.currentText().strip():
            self.error.setText("Give at least one tag.")
            return
        super().accept()


class Tray:
    """Owns the QSystemTrayIcon and its menu. The menu exists even where no tray is
    available (tests, some Linux desktops); the icon is shown only where one is."""

    def __init__(self, window: TrayHost, icon: QIcon) -> None:
        self.window = window
        self.available = QSystemTrayIcon.isSystemTrayAvailable()
        self.icon = QSystemTrayIcon(icon, window)
        self.icon.setToolTip("Khala")
        self.menu = QMenu()
        self.quick_action = self.menu.addAction("Quick Generate…", self.quick_generate)
        self.recent_menu = self.menu.addMenu("Recent Songs")
        self.menu.addSeparator()
        self.open_action = self.menu.addAction("Open Khala", self.open_window)
        self.quit_action = self.menu.addAction("Quit Khala", window.request_quit)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self.menu.aboutToShow.connect(self.refresh_recent)
        window.song_added.connect(lambda _id: self.refresh_recent())
        window.tray = self
        self.dialog: QuickGenerateDialog | None = None
        self.refresh_recent()
        if self.available:
            self.icon.show()

    def notify(self, title: str, text: str) -> None:
        if self.available and self.icon.isVisible():
            self.icon.showMessage(title, text, QSystemTrayIcon.MessageIcon.Information, 5000)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.DoubleClick:
            self.open_window()

    def open_window(self) -> None:
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()

    def refresh_recent(self) -> None:
        self.recent_menu.clear()
        songs = [s for s in self.window.library.songs() if s.status != "missing"][:RECENT]
        for rec in songs:
            act = self.recent_menu.addAction(f"▶ {rec.title}")
            act.triggered.connect(lambda _=False, song_id=rec.id: self.play(song_id))
        if not songs:
            self.recent_menu.addAction("No songs yet").setEnabled(False)

    def play(self, song_id: int) -> None:
        self.window.model.refresh()
        self.window.play_row(self.window.model.row_of(song_id))

    def quick_generate(self) -> None:
        genres = self.window.compose.categories[0].tags if self.window.compose.categories else ()
        self.dialog = QuickGenerateDialog(list(genres))
        self.dialog.accepted.connect(self._start_quick)
        self.dialog.show()
        self.dialog.raise_()

    def _start_quick(self) -> None:
        request = self.dialog.request()
        if not request.instrumental:
            request = SongRequest(**{**request.to_dict(), "lyrics": self.window.compose.lyrics.text()})
        queued = self.window.busy  # the same queue as the window's Generate
        if self.window.start_generation(request):
            self.notify("Added to the queue" if queued else "Making a song",
                        f"“{request.tags}” — you'll be told when it is ready.")
        else:
            self.notify("Khala", self.window.status.text())
            self.open_window()
