"""Advanced sampling settings: temperature, top-k, super-res top-k, seed, variations."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QSpinBox, QWidget

from engine.request import TEMPERATURE_RANGE, TOP_K_RANGE, SongRequest


class AdvancedSettings(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.temperature = QDoubleSpinBox(decimals=2, singleStep=0.05)
        self.temperature.setRange(*TEMPERATURE_RANGE)
        self.temperature.setToolTip("Higher is more adventurous, lower is safer")
        self.top_k = QSpinBox()
        self.top_k.setRange(*TOP_K_RANGE)
        self.top_k_superres = QSpinBox()
        self.top_k_superres.setRange(1, 1024)
        self.fixed_seed = QCheckBox("Fixed")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.fixed_seed.toggled.connect(self.seed.setEnabled)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.fixed_seed)
        seed_row.addWidget(self.seed, 1)
        self.variations = QSpinBox()
        self.variations.setRange(1, 4)
        self.variations.setToolTip("How many different songs to make from the same settings")
        form = QFormLayout(self)
        form.setContentsMargins(0, 4, 0, 0)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-k", self.top_k)
        form.addRow("Super-res top-k", self.top_k_superres)
        form.addRow("Seed", seed_row)
        form.addRow("Variations", self.variations)
        self.set_from(SongRequest())

    def set_from(self, r: SongRequest) -> None:
        self.temperature.setValue(r.temperature if r.temperature else 1.0)
        self.top_k.setValue(r.top_k)
        self.top_k_superres.setValue(r.top_k_superres)
        self.fixed_seed.setChecked(r.seed is not None)
        self.seed.setEnabled(r.seed is not None)
        if r.seed is not None:
            self.seed.setValue(min(r.seed, 2**31 - 1))
        self.variations.setValue(r.variations)

    def values(self) -> dict:
        return {"temperature": round(self.temperature.value(), 2), "top_k": self.top_k.value(),
                "top_k_superres": self.top_k_superres.value(),
                "seed": self.seed.value() if self.fixed_seed.isChecked() else None,
                "variations": self.variations.value()}
