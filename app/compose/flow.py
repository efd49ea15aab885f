"""A widget that places its children left to right and wraps, for tag chips.

A plain widget rather than a Python ``QLayout``: Qt calls a layout's ``itemAt``/``takeAt``
overrides past the last item on every layout pass, and each call crosses into Python and
back (about a dozen per pass with a few chips). Here a pass is one Python loop over the
children. (The process abort once seen with ~100 chips was PySide6 6.12.0 dropping a reference
to ``None`` on every void call on Python < 3.12; setup.py keeps PySide6 below 6.12, and
tests/app/test_app_inputs.py fails if an installed PySide6 leaks again.)
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QSizePolicy, QWidget


class FlowWidget(QWidget):
    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._widgets: list[QWidget] = []
        self._spacing = spacing
        policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)

    # -- children ------------------------------------------------------------------------
    def add_widget(self, widget: QWidget) -> None:
        widget.setParent(self)
        self._widgets.append(widget)
        widget.show()
        self._relayout()

    def widgets(self) -> list[QWidget]:
        return list(self._widgets)

    def clear(self) -> None:
        widgets, self._widgets = self._widgets, []
        for widget in widgets:
            widget.hide()
            widget.setParent(None)
            widget.deleteLater()
        self._relayout()

    def _relayout(self) -> None:
        self.updateGeometry()
        self._place(self.width(), dry=False)

    # -- geometry ------------------------------------------------------------------------
    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._place(width, dry=True)

    def sizeHint(self) -> QSize:
        width = max(self.width(), self.minimumSizeHint().width())
        return QSize(width, self.heightForWidth(width))

    def minimumSizeHint(self) -> QSize:
        size = QSize(0, 0)
        for widget in self._widgets:
            size = size.expandedTo(widget.sizeHint())
        return size

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place(event.size().width(), dry=False)

    def _place(self, width: int, dry: bool) -> int:
        """Lay the children out in rows ``width`` wide; returns the height they take."""
        x = y = line = 0
        for widget in self._widgets:
            hint = widget.sizeHint()
            if x > 0 and x + hint.width() > width:
                x, y, line = 0, y + line + self._spacing, 0
            if not dry:
                widget.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            line = max(line, hint.height())
        return y + line
