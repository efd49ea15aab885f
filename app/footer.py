"""The generation footer pinned under the compose panel: progress bar, status line, Cancel, Generate."""

from __future__ import annotations

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class GenerationFooter(QWidget):
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
