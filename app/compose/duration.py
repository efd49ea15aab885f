"""Song length: chips for 2/3/4/5/8/10 minutes plus a custom 0..10 spin box."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QSpinBox, QWidget

from engine.request import DURATION_RANGE

CHIPS = (2, 3, 4, 5, 8, 10)


class DurationSelector(QWidget):
    changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("durationSelector")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.chips: dict[int, QPushButton] = {}
        for minutes in CHIPS:
            chip = QPushButton(f"{minutes} min")
            chip.setObjectName("durationChip")
            chip.setCheckable(True)
            self.group.addButton(chip, minutes)
            self.chips[minutes] = chip
            lay.addWidget(chip)
        lay.addSpacing(8)
        lay.addWidget(QLabel("Custom"))
        self.spin = QSpinBox()
        self.spin.setRange(*DURATION_RANGE)
        self.spin.setSuffix(" min")
        self.spin.setAccessibleName("Custom duration in minutes")
        lay.addWidget(self.spin)
        lay.addStretch(1)
        self.group.idClicked.connect(self.setValue)
        self.spin.valueChanged.connect(self._on_spin)
        self.setValue(2)

    def value(self) -> int:
        return self.spin.value()

    def setValue(self, minutes: int) -> None:
        self.spin.setValue(max(DURATION_RANGE[0], min(DURATION_RANGE[1], int(minutes))))
        self._on_spin(self.spin.value())

    def _on_spin(self, minutes: int) -> None:
        chip = self.chips.get(minutes)
        if chip is not None:
            chip.setChecked(True)
        else:
            self.group.setExclusive(False)
            for c in self.chips.values():
                c.setChecked(False)
            self.group.setExclusive(True)
        self.changed.emit(minutes)
