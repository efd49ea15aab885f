"""The main window's generation controls: start (after a memory check), progress, cancel."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app import memory_check, paths
from app.generate import SavedSong, generation_work
from app.jobs import Job
from app.progress import ProgressTracker
from engine.errors import KhalaError
from engine.request import SongRequest
from engine.events import Log, Progress, Stage

if TYPE_CHECKING:
    from app.window import MainWindow


def weights_problem(folder) -> str | None:
    if folder is None:
        return "The model is not downloaded yet. Choose File → Download Model…"
    try:
        from engine.weights.folder import locate_weights

        locate_weights(folder)
    except Exception as exc:  # noqa: BLE001 - WeightsError or anything odd: say it, don't crash
        return f"The model in {folder} cannot be used: {exc}"
    return None


class GenerationFooter(QWidget):
    """Progress bar, status line, Cancel and Generate, pinned under the compose panel."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composeFooter")
        self.progress = QProgressBar(objectName="progressBar", textVisible=False)
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        self.status = QLabel("Ready", objectName="statusLabel", wordWrap=True)
        self.generate_button = QPushButton("Generate", objectName="generateButton")
        native = QKeySequence("Ctrl+Return").toString(QKeySequence.SequenceFormat.NativeText)
        self.generate_button.setToolTip(f"Generate ({native})")
        self.generate_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel", objectName="cancelButton", enabled=False)
        self.cancel_button.setToolTip("Cancel (Esc)")
        buttons = QHBoxLayout()
        buttons.setSpacing(8)
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.generate_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 8, 16, 12)
        lay.addWidget(self.progress)
        lay.addLayout(buttons)


class GenerationMixin:
    """Mixed into MainWindow; uses its compose panel, library, list and footer widgets."""

    def generate(self: "MainWindow") -> None:
        if self.busy:
            return
        request, problem = self.compose.validated_request()
        if request is None:
            self.show_message(problem, "error")
            return
        self.start_generation(request)

    def start_generation(self: "MainWindow", request: SongRequest, check_memory: bool = True) -> bool:
        """Starts a song; False when it did not start (the reason is in the status line)."""
        if self.busy:
            self.show_message("A song is already being made; wait or cancel it first.", "error")
            return False
        problem = weights_problem(self.weights_dir) or paths.check_writable_dir(self.settings.songs_dir)
        if problem:
            self.show_message(problem, "error")
            return False
        try:
            request.validate()
        except KhalaError as exc:
            self.show_message(str(exc), "error")
            return False
        if self.settings.max_tokens:
            request = dataclasses.replace(request, max_tokens=self.settings.max_tokens)
        if check_memory:
            warning = memory_check.memory_warning(request, self.weights_dir)
            if warning:
                self.show_message(warning, "warn")
                self.confirm_memory(request, warning)
                return False
        self.settings.last_request = request
        self.tracker = ProgressTracker(request.variations)
        self.job = Job(generation_work(self.provider, self.weights_dir, request, self.settings.songs_dir,
                                       self.settings.audio_format), self)
        self.job.event.connect(self._on_event)
        self.job.failed.connect(lambda m: self.show_message(m, "error"))
        self.job.cancelled.connect(lambda: self.show_message("Cancelled. Nothing was kept from the unfinished song."))
        self.job.finished.connect(self._on_job_finished)
        self._set_busy(True)
        self.show_message("Starting…")
        self.job.start()
        return True

    def confirm_memory(self: "MainWindow", request: SongRequest, warning: str) -> None:
        """A non-blocking question; the window stays usable while it is open."""
        if self.memory_box is not None:
            self.memory_box.finished.disconnect()
            self.memory_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, "This song may not fit in memory", warning,
                          QMessageBox.StandardButton.NoButton, self)
        box.setObjectName("memoryWarning")
        box.setInformativeText("Generate it anyway?")
        go = box.addButton("Generate Anyway", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)

        def done() -> None:
            self.memory_box = None
            if box.clickedButton() is go:
                self.start_generation(request, check_memory=False)
            elif not self.busy:
                self.show_message("Not started. A shorter song or closing other apps needs less memory.")

        box.finished.connect(done)
        box.setWindowModality(Qt.WindowModality.NonModal)
        self.memory_box = box
        box.show()

    def cancel_generation(self: "MainWindow") -> None:
        if self.job is not None:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.show_message("Cancelling…")

    def _set_busy(self: "MainWindow", busy: bool) -> None:
        self.generate_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.compose.setEnabled(not busy)
        self.progress.setVisible(busy)
        self.progress.setValue(0)
        self.busy_changed.emit(busy)

    def _on_event(self: "MainWindow", event: object) -> None:
        if isinstance(event, (Stage, Progress)) and self.tracker is not None:
            snap = self.tracker.on_stage(event) if isinstance(event, Stage) else self.tracker.on_progress(event)
            self.progress.setValue(snap.percent)
            if not (self.job and self.job.token.cancelled):
                self.show_message(snap.text)
        elif isinstance(event, Log):
            self.status.setToolTip(event.text)
        elif isinstance(event, SavedSong):
            song_id = self.library.add(event.record)
            self.model.refresh()
            row = self.model.row_of(song_id)
            self.list.selectionModel().setCurrentIndex(self.model.index(row),
                                                       QItemSelectionModel.SelectionFlag.ClearAndSelect)
            self.song_added.emit(song_id)
            self.notify("Song ready", f"“{event.record.title}” is in your library.")

    def _on_job_finished(self: "MainWindow") -> None:
        job, self.job = self.job, None
        self._set_busy(False)
        if job is not None and not job.token.cancelled and self.status.property("level") != "error":
            self.show_message("Done. Double-click a song to play it.")
