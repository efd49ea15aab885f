"""Settings → Check This Mac…: the doctor's probe (engine.doctor) with progress, cancel, the verdict,
each check, and Save Report….

The probe runs on the worker thread of app.jobs.Job; engine.doctor (which imports torch) is
imported there, never here. ``open_doctor`` starts a full check; ``run_quick_check`` the quick one
the app runs by itself once the first model download is ready.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from app.jobs import Job
from engine.doctor_report import FAIL, PASS, STAGE_LABELS, WARN, DoctorReport, save_report
from engine.errors import OutputError
from engine.events import CancelToken, Log, Progress, Stage

STAGES = list(STAGE_LABELS)
STATUS_MARKS = {PASS: ("✓", "#1e8e3e"), WARN: ("!", "#b25000"), FAIL: ("✗", "#d70015")}
VERDICT_WORDS = {
    PASS: "This Mac computes what the model computes.",
    WARN: "Songs will be right, with a caveat below.",
    FAIL: "Songs made this way cannot be trusted.",
}
VERDICT_STYLE = {PASS: "color: #1e8e3e;", WARN: "color: #b25000;", FAIL: "color: #d70015;"}


def doctor_work(weights_dir: Path, quick: bool) -> Callable[[CancelToken], Iterator[object]]:
    """The Job's work: the probe's events, then its DoctorReport (engine.doctor loads on the worker)."""
    def work(cancel: CancelToken) -> Iterator[object]:
        from engine.doctor import run_doctor

        yield from run_doctor(weights_dir, quick=quick, cancel=cancel)
    return work


def overall_fraction(stage: str, done: int = 0, total: int = 0) -> float:
    """0..1 over the probe's stages (the optional last one, safe_dtype, counts as the end)."""
    index = STAGES.index(stage) if stage in STAGES else 0
    within = min(done / total, 1.0) if total > 0 else 0.0
    return min((index + within) / (len(STAGES) - 1), 1.0)


class DoctorDialog(QDialog):
    """``report_ready(DoctorReport)`` when a check ends with a report."""

    report_ready = Signal(object)

    def __init__(self, weights_dir: Path | None, parent: QWidget | None = None, *, quick: bool = False,
                 busy: Callable[[], bool] | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("doctorDialog")
        self.setWindowTitle("Check This Mac")
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.quick, self.busy = quick, busy or (lambda: False)
        self.job: Job | None = None
        self.report: DoctorReport | None = None
        self.stage = ""

        title = QLabel("Check This Mac", objectName="paneTitle")
        intro = QLabel("Runs the model on this Mac's graphics chip and compares its numbers with a reference "
                       "computed on the CPU, looks for overflow and for steps the chip cannot do, and times it. "
                       "It takes a minute or two and needs about as much memory as a song.",
                       wordWrap=True, objectName="hint")
        self.bar = QProgressBar(objectName="progressBar", textVisible=False)
        self.bar.setRange(0, 1000)
        self.status = QLabel(wordWrap=True, objectName="statusLabel")
        self.verdict = QLabel(objectName="doctorVerdict", wordWrap=True)
        self.verdict.setVisible(False)
        self.summary = QLabel(wordWrap=True, objectName="doctorSummary")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setVisible(False)
        self.checks = QTreeWidget(objectName="doctorChecks")
        self.checks.setHeaderLabels(["", "Check", "Result"])
        self.checks.setRootIsDecorated(False)
        self.checks.setWordWrap(True)
        self.checks.setUniformRowHeights(False)
        self.checks.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.checks.setAlternatingRowColors(True)
        header = self.checks.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.checks.setVisible(False)

        self.save_button = QPushButton("Save Report…", enabled=False)
        self.again_button = QPushButton("Check Again")
        self.cancel_button = QPushButton("Cancel", objectName="cancelButton", visible=False)
        self.close_button = QPushButton("Close")
        self.save_button.clicked.connect(self.save)
        self.again_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addStretch(1)
        for b in (self.again_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(20, 18, 20, 16)
        lay.setSpacing(10)
        for w in (title, intro, self.bar, self.status, self.verdict, self.summary):
            lay.addWidget(w)
        lay.addWidget(self.checks, 1)
        lay.addLayout(buttons)
        self.resize(640, 260)

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a check; False (and why, in the status line) when it cannot start now."""
        if self.job is not None:
            return False
        if self.weights_dir is None:
            return self._refuse("There is no model yet: download it first (File → Download Model…).")
        if self.busy():
            return self._refuse("A song is being made. Check this Mac when it is done: the check needs the "
                                "memory a song uses.")
        self.report = None
        self.checks.clear()
        for w in (self.checks, self.verdict, self.summary):
            w.setVisible(False)
        self.bar.setValue(0)
        self._status("Starting…")
        self.job = Job(doctor_work(self.weights_dir, self.quick), self)
        self.job.event.connect(self._on_event)
        self.job.failed.connect(lambda message: self._status(f"The check stopped: {message}", "error"))
        self.job.cancelled.connect(lambda: self._status("Check cancelled."))
        self.job.finished.connect(self._on_finished)
        self._running(True)
        self.job.start()
        return True

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._status("Stopping…")

    def _refuse(self, message: str) -> bool:
        self._status(message, "warn")
        return False

    def _running(self, running: bool) -> None:
        self.cancel_button.setVisible(running)
        self.again_button.setVisible(not running)
        self.save_button.setEnabled(not running and self.report is not None)

    def _status(self, text: str, level: str = "") -> None:
        self.status.setText(text)
        self.status.setProperty("level", level)
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)

    def _on_event(self, item: object) -> None:
        if isinstance(item, Stage):
            self.stage = item.name
            self._status(STAGE_LABELS.get(item.name, item.name) + "…")
            self.bar.setValue(int(1000 * overall_fraction(item.name)))
        elif isinstance(item, Progress):
            self.bar.setValue(int(1000 * overall_fraction(item.stage, item.done, item.total)))
        elif isinstance(item, Log):
            self._status(f"{STAGE_LABELS.get(self.stage, self.stage)}: {item.text}")
        elif isinstance(item, DoctorReport):
            self.show_report(item)

    def _on_finished(self) -> None:
        self.job = None
        self._running(False)

    # -- the result ------------------------------------------------------------------------------
    def show_report(self, report: DoctorReport) -> None:
        self.report = report
        self.bar.setValue(1000)
        verdict = report.verdict
        self.verdict.setText(f"{verdict.upper()}: {VERDICT_WORDS[verdict]}")
        self.verdict.setStyleSheet(f"font-size: 15px; font-weight: 600; {VERDICT_STYLE[verdict]}")
        self.verdict.setProperty("level", verdict)
        self.summary.setText(f"{report.device}, {report.dtype}"
                             + (f" · {report.tokens_per_s:.0f} tokens/s" if report.tokens_per_s else "")
                             + (f" · peak memory {report.peak_memory_gb:.1f} GB" if report.peak_memory_gb else "")
                             + ("" if verdict == PASS else f"\n{report.summary.split(': ', 1)[-1]}"))
        self.checks.clear()
        for check in report.checks:
            mark, color = STATUS_MARKS.get(check.status, ("?", "#6e6e73"))
            row = QTreeWidgetItem(["  " + mark, check.name, check.detail])
            row.setForeground(0, QColor(color))
            row.setToolTip(2, check.detail)
            self.checks.addTopLevelItem(row)
        for w in (self.verdict, self.summary, self.checks):
            w.setVisible(True)
        self._status("Done. Save the report to attach it to a bug report: it holds no lyrics and no "
                     "folder paths beyond the model folder's name.")
        self.resize(max(self.width(), 880), max(self.height(), 500))
        self.report_ready.emit(report)

    def save(self, path: Path | str | None = None) -> bool:
        if self.report is None:
            return False
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Save Report", str(Path.home() / "khala-check.txt"),
                                                  "Text (*.txt);;JSON (*.json)")
            if not path:
                return False
        try:
            save_report(self.report, path)
        except OutputError as error:
            self._status(str(error), "error")
            return False
        self._status(f"Saved {Path(path).name}.")
        return True

    def closeEvent(self, event) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job.wait(30_000)
        super().closeEvent(event)


def open_doctor(parent: QWidget, weights_dir: Path | None, *, busy: Callable[[], bool] | None = None,
                modal: bool = True) -> DoctorDialog:
    """Settings → Check This Mac…: show the dialog and start the full check."""
    dialog = DoctorDialog(weights_dir, parent, busy=busy)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    if modal:
        dialog.open()
    else:
        dialog.show()
    dialog.start()
    return dialog


def run_quick_check(parent: QWidget, weights_dir: Path, *, busy: Callable[[], bool] | None = None) -> DoctorDialog:
    """The quick check the app runs once by itself after the first model download (connect it to
    FirstLaunchDialog.weights_ready): weights' structure only (they were just hashed), fewer timed
    tokens, the same parity and numerics. Not modal: the app stays usable."""
    dialog = DoctorDialog(weights_dir, parent, quick=True, busy=busy)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    dialog.start()
    return dialog
