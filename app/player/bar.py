"""The player bar: play/pause, position slider (seek), time, current song title."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

from app.library.view import format_length
from app.player.player import Player


class PlayerBar(QWidget):
    def __init__(self, player: Player, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("playerBar")
        self.player = player
        self.play_button = QPushButton("▶")
        self.play_button.setObjectName("playButton")
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.setFixedWidth(44)
        self.play_button.setEnabled(False)
        self.title = QLabel("Nothing playing")
        self.title.setObjectName("nowPlaying")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setEnabled(False)
        self.time = QLabel("0:00 / 0:00")
        self.time.setObjectName("hint")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 6, 12, 6)
        lay.addWidget(self.play_button)
        lay.addWidget(self.title)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.time)
        self._dragging = False
        self.slider.sliderPressed.connect(lambda: setattr(self, "_dragging", True))
        self.slider.sliderReleased.connect(self._seek)
        player.position_changed.connect(self._on_position)
        player.duration_changed.connect(self._on_duration)
        player.state_changed.connect(lambda on: self.play_button.setText("❚❚" if on else "▶"))

    def set_song(self, title: str) -> None:
        self.title.setText(title)
        self.slider.setRange(0, int(self.player.duration * 10))
        self.slider.setEnabled(True)
        self.play_button.setEnabled(True)
        self._on_position(self.player.position)

    def _on_duration(self, seconds: float) -> None:
        """A growing preview: the slider reaches as far as the audio that has arrived."""
        if self.slider.isEnabled():
            self.slider.setRange(0, int(seconds * 10))
        self._on_position(self.player.position)

    def _seek(self) -> None:
        self._dragging = False
        self.player.seek(self.slider.value() / 10)

    def _on_position(self, seconds: float) -> None:
        if not self._dragging:
            self.slider.setValue(int(seconds * 10))
        self.time.setText(f"{format_length(seconds)} / {format_length(self.player.duration)}")
