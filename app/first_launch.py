"""First launch: no model yet → say how much will be downloaded and how much disk is free,
then download (progress, cancel, resume) or use a folder the user already has.

The dialog is not modal: the library and the player stay usable while it downloads."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QDialog, QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                               QVBoxLayout, QWidget)

from app.jobs import Job
from app.paths import display_path
from app.progress import format_duration


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def free_bytes(folder: Path) -> int:
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return 0


def describe_progress(p) -> str:
    parts = [getattr(p, "file", "") or "Downloading"]
    done, total = getattr(p, "bytes_done", 0), getattr(p, "bytes_total", 0)
    if total:
        parts.append(f"{gb(done)} of {gb(total)}")
    rate = getattr(p, "rate_bytes_per_s", 0) or 0
    if rate:
        parts.append(f"{rate / 1e6:.1f} MB/s")
    eta = getattr(p, "eta_s", None)
    if eta:
        parts.append(f"about {format_duration(eta)} left")
    return " · ".join(parts)


class FirstLaunchDialog(QDialog):
    weights_ready = Signal(Path)  # the model folder can be used (downloaded or chosen)
    downloaded = Signal(Path)  # … and it was downloaded just now

    def __init__(self, folder: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("firstLaunchDialog")
        self.setWindowTitle("Get the Khala Model")
        self.setModal(False)
        self.folder = Path(folder)
        self.job: Job | None = None
        self.check_job: Job | None = None
        from engine.weights.folder import required_download_bytes
        from engine.weights.manifest import download_size_text

        try:
            need = required_download_bytes(self.folder)
        except Exception:  # noqa: BLE001 - no manifest: still offer the folder choice
            need = 0
        free = free_bytes(self.folder)
        title = QLabel("Khala needs its model to make songs", objectName="paneTitle")
        self.info = QLabel(wordWrap=True, objectName="downloadInfo")
        self.info.setText(f"The download is {download_size_text(need)}. Free space on this disk: {gb(free)}.\n"
                          f"It will be saved in {display_path(self.folder)}.")
        note = QLabel("Your library and the player keep working while it downloads. A stopped "
                      "download resumes where it left off.", wordWrap=True, objectName="hint")
        self.enough = need <= free
        self.status = QLabel(wordWrap=True, objectName="downloadStatus")
        if not self.enough:
            self.status.setText("There is not enough free disk space. Free some space, or use a folder "
                                "that already holds the model.")
            self.status.setProperty("level", "error")
        self.bar = QProgressBar(objectName="downloadProgress")
        self.bar.setRange(0, 1000)
        self.bar.setVisible(False)
        self.existing = QPushButton("Use Existing Folder…")
        self.later = QPushButton("Later")
        self.cancel_button = QPushButton("Cancel", enabled=False, visible=False)
        self.download = QPushButton("Download", objectName="generateButton")
        self.download.setDefault(True)
        self.existing.clicked.connect(self.choose_existing)
        self.later.clicked.connect(self.close)
        self.cancel_button.clicked.connect(self.cancel)
        self.download.clicked.connect(self.start_download)
        buttons = QHBoxLayout()
        buttons.addWidget(self.existing)
        buttons.addStretch(1)
        for b in (self.later, self.cancel_button, self.download):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(20, 18, 20, 16)
        lay.setSpacing(10)
        for w in (title, self.info, note, self.bar, self.status):
            lay.addWidget(w)
        lay.addLayout(buttons)
        self.resize(520, 0)

    # -- use a folder ------------------------------------------------------------------
    def choose_existing(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the Folder With the Model")
        if folder:
            self.use_folder(Path(folder))

    def use_folder(self, folder: Path) -> None:
        """Check ``folder`` on a worker (it is user input: every file is read, headers only) and
        accept it when it is whole; the dialog says "Checking…" meanwhile."""
        if self.job is not None or self.check_job is not None:
            return
        from engine.weights.preflight import check_model_files

        def work(cancel):
            check_model_files(folder)
            yield Path(folder)

        self.check_job = job = Job(work, self)
        job.event.connect(self._folder_checked)
        job.failed.connect(lambda message: self.status.setText(f"That folder cannot be used: {message}"))
        job.finished.connect(self._folder_check_finished)
        self.existing.setEnabled(False)
        self.download.setEnabled(False)
        self.status.setProperty("level", "")
        self.status.setText(f"Checking {folder}…")
        job.start()

    def _folder_checked(self, folder: Path) -> None:
        self.weights_ready.emit(folder)
        self.accept()

    def _folder_check_finished(self) -> None:
        self.check_job = None
        self.existing.setEnabled(True)
        self.download.setEnabled(True)

    # -- download ----------------------------------------------------------------------
    def start_download(self) -> None:
        if self.job is not None:
            return
        from engine.weights.download import download_events

        folder = self.folder

        def run(cancel):
            yield from download_events(folder, cancel=cancel)
            yield "done"

        self.job = Job(run, self)
        self.job.event.connect(self._on_event)
        self.job.failed.connect(self._on_failed)
        self.job.cancelled.connect(lambda: self.status.setText("Download paused. Press Resume to continue "
                                                               "where it stopped."))
        self.job.finished.connect(self._on_finished)
        self.bar.setVisible(True)
        self.download.setEnabled(False)
        self.existing.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.cancel_button.setVisible(True)
        self.later.setVisible(False)
        self.status.setProperty("level", "")
        self.status.setText("Connecting…")
        self.job.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Stopping…")

    def _on_event(self, item: object) -> None:
        if item == "done":
            self.status.setText("Download complete.")
            self.bar.setValue(1000)
            self._done = True
            return
        total = getattr(item, "bytes_total", 0) or 0
        done = getattr(item, "bytes_done", 0) or 0
        if total:
            self.bar.setValue(int(1000 * done / total))
        self.status.setText(describe_progress(item))

    def _on_failed(self, message: str) -> None:
        self.status.setText(f"The download stopped: {message} Press Resume to try again.")

    def _on_finished(self) -> None:
        self.job = None
        self.cancel_button.setEnabled(False)
        self.cancel_button.setVisible(False)
        self.later.setVisible(True)
        self.existing.setEnabled(True)
        if getattr(self, "_done", False):
            self.weights_ready.emit(self.folder)
            self.downloaded.emit(self.folder)
            self.accept()
        else:
            self.download.setText("Resume")
            self.download.setEnabled(True)

    def closeEvent(self, event) -> None:
        for job in (self.job, self.check_job):
            if job is not None:
                job.cancel()
                job.wait(10_000)
        super().closeEvent(event)
