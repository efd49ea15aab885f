"""The library list: rows with a waveform thumbnail, title, tags, length, date and status."""

from __future__ import annotations

from datetime import datetime

from PySide6.QtCore import QModelIndex, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPalette
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from app.library.store import SongRecord
from app.library.model import CutRole, ParentNoteRole, RecordRole
from app.player.waveform import paint_cut, paint_peaks, peaks_from_bytes

EMPTY_TEXT = "No songs yet — describe one on the left and press Generate"
ROW_HEIGHT = 64
THUMB_W = 120


def format_length(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def format_date(iso: str) -> str:
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    today = datetime.now().date()
    return f"Today {when:%H:%M}" if when.date() == today else f"{when:%d %b %Y}"


class SongDelegate(QStyledItemDelegate):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.playing_id: int | None = None
        self.played = 0.0
        self.cut_marks: dict[int, float] = {}  # song id → where its continuation being made starts (0..1)

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return QSize(200, ROW_HEIGHT)  # the row takes the view's width; never scroll sideways

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        rec: SongRecord | None = index.data(RecordRole)
        if rec is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        rect = option.rect.adjusted(6, 3, -6, -3)
        if selected:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(pal.color(QPalette.ColorRole.Highlight))
            painter.drawRoundedRect(rect, 8, 8)
        text = pal.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        dim = QColor(text)
        dim.setAlpha(150)
        missing = rec.status == "missing"

        thumb = QRectF(rect.left() + 10, rect.top() + 12, min(THUMB_W, rect.width() // 4), rect.height() - 24)
        accent = QColor(text if selected else pal.color(QPalette.ColorRole.Highlight))
        if missing:
            accent = dim
        wave = QColor(accent)
        wave.setAlpha(110)
        played = self.played if rec.id == self.playing_id else 0.0
        paint_peaks(painter, thumb, peaks_from_bytes(rec.peaks), wave, played, accent)
        for cut in (index.data(CutRole), self.cut_marks.get(rec.id)):
            if cut is not None:
                paint_cut(painter, thumb, cut, text)

        x = int(thumb.right()) + 14
        width = rect.right() - x - 10
        title_font = QFont(option.font)
        title_font.setBold(True)
        painter.setFont(title_font)
        painter.setPen(text)
        title = ("▶ " if rec.id == self.playing_id else "") + rec.title
        fm = painter.fontMetrics()
        painter.drawText(QRect(x, rect.top() + 10, width - 60, fm.height()), Qt.AlignmentFlag.AlignLeft,
                         fm.elidedText(title, Qt.TextElideMode.ElideRight, width - 60))
        painter.setFont(option.font)
        painter.drawText(QRect(rect.right() - 70, rect.top() + 10, 60, fm.height()),
                         Qt.AlignmentFlag.AlignRight, format_length(rec.duration_s))
        painter.setPen(QColor("#d9534f") if missing else dim)
        detail = "Audio file missing" if missing else " · ".join(
            p for p in (index.data(ParentNoteRole), rec.tags, format_date(rec.created_at)) if p)
        fm = painter.fontMetrics()
        painter.drawText(QRect(x, rect.top() + 12 + fm.height(), width, fm.height()), Qt.AlignmentFlag.AlignLeft,
                         fm.elidedText(detail, Qt.TextElideMode.ElideRight, width))
        painter.restore()


class LibraryView(QListView):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("libraryList")
        self.delegate = SongDelegate(self)
        self.setItemDelegate(self.delegate)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setUniformItemSizes(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.setAccessibleName("Song library")

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if self.model() is not None and self.model().rowCount() == 0:
            painter = QPainter(self.viewport())
            color = self.palette().color(QPalette.ColorRole.Text)
            color.setAlpha(140)
            painter.setPen(color)
            painter.drawText(self.viewport().rect().adjusted(30, 0, -30, 0),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, EMPTY_TEXT)
