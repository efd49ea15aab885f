"""Settings: songs folder, model folder, audio format, keep the model loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget)

from app import paths
from app.settings import Settings
from engine.errors import KhalaError
from engine.remote.client import normalise_server_url

THIS_MAC, SERVER = "This Mac", "Khala server at"


def _folder_row(edit: QLineEdit, parent: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    button = QPushButton("Choose…")
    button.clicked.connect(lambda: edit.setText(QFileDialog.getExistingDirectory(parent, "Choose Folder",
                                                                                 edit.text()) or edit.text()))
    row.addWidget(button)
    return row


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, weights_dir: Path | None, set_weights_dir: Callable[[Path], None],
                 busy: Callable[[], bool] = lambda: False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings, self.weights_dir, self.set_weights_dir = settings, weights_dir, set_weights_dir
        self.busy = busy
        self.songs = QLineEdit(paths.display_path(settings.songs_dir))
        self.weights = QLineEdit(paths.display_path(weights_dir) if weights_dir else "")
        self.format = QComboBox()
        self.format.addItems(["wav", "flac", "mp3"])
        self.format.setCurrentText(settings.audio_format)
        self.keep = QCheckBox("Keep the model in memory between songs (faster, uses more memory)")
        self.keep.setChecked(settings.keep_model_loaded)
        self.engine = QComboBox(objectName="engineChoice")
        self.engine.addItems([THIS_MAC, SERVER])
        self.server = QLineEdit(settings.server_url, placeholderText="http://studio-server:8888")
        self.server.setToolTip("An upstream Khala server (its dispatcher). Songs are made there and saved here.")
        self.engine.currentTextChanged.connect(lambda text: self.server.setEnabled(text == SERVER))
        self.engine.setCurrentText(SERVER if settings.server_url else THIS_MAC)
        self.server.setEnabled(bool(settings.server_url))
        engine_row = QHBoxLayout()
        engine_row.addWidget(self.engine)
        engine_row.addWidget(self.server, 1)
        self.error = QLabel(objectName="statusLabel", wordWrap=True)
        self.error.setProperty("level", "error")
        form = QFormLayout(self)
        form.addRow("Songs folder", _folder_row(self.songs, self))
        form.addRow("Model folder", _folder_row(self.weights, self))
        form.addRow("Engine", engine_row)
        form.addRow("Audio format", self.format)
        form.addRow("", self.keep)
        self.check_button = QPushButton("Check This Mac…")
        self.check_button.clicked.connect(self.check_this_mac)
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_button)
        check_row.addStretch(1)
        form.addRow("Model on this Mac", check_row)
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.apply)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def check_this_mac(self):
        """The doctor's full check of the model folder in the field (applied or not)."""
        from app.doctor_dialog import open_doctor

        folder = self.weights.text().strip()
        return open_doctor(self, Path(folder).expanduser() if folder else self.weights_dir, busy=self.busy)

    def apply(self) -> None:
        songs = Path(self.songs.text().strip()).expanduser()
        problem = paths.check_writable_dir(songs)
        server = ""
        if not problem and self.engine.currentText() == SERVER:
            try:
                server = normalise_server_url(self.server.text())
            except KhalaError as exc:
                problem = str(exc)
        if problem:
            self.error.setText(problem)
            return
        s = self.settings
        s.server_url = server
        s.songs_dir = songs
        s.audio_format = self.format.currentText()
        s.keep_model_loaded = self.keep.isChecked()
        folder = Path(self.weights.text().strip()).expanduser() if self.weights.text().strip() else None
        if folder is not None and folder != self.weights_dir:
            s.weights_dir = folder
            self.set_weights_dir(folder)
        self.accept()
