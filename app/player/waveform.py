"""Waveform peaks for thumbnails and a painter that draws them."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap, QPolygonF

PEAK_COUNT = 120


def compute_peaks(audio: np.ndarray, count: int = PEAK_COUNT) -> np.ndarray:
    """Max |sample| per bucket over all channels, as uint8 0..255. ``audio`` is [channels, n] or [n]."""
    mono = np.abs(np.asarray(audio, dtype=np.float32))
    if mono.ndim == 2:
        mono = mono.max(axis=0)
    if mono.size == 0:
        return np.zeros(count, dtype=np.uint8)
    edges = np.linspace(0, mono.size, count + 1).astype(np.int64)
    peaks = np.array([mono[a:max(b, a + 1)].max() if a < mono.size else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    return (np.clip(peaks, 0.0, 1.0) * 255).astype(np.uint8)


def peaks_from_file(path, count: int = PEAK_COUNT) -> np.ndarray:
    """Peaks of an audio file read block by block (a long song is never held whole); zeros if unreadable."""
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as f:
            frames = f.frames
            if frames <= 0:
                return np.zeros(count, dtype=np.uint8)
            edges = np.linspace(0, frames, count + 1).astype(np.int64)
            peaks = np.zeros(count, dtype=np.float32)
            for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
                f.seek(int(a))
                block = f.read(max(int(b - a), 1), dtype="float32", always_2d=True)
                peaks[i] = float(np.abs(block).max()) if block.size else 0.0
    except (OSError, RuntimeError, ValueError):
        return np.zeros(count, dtype=np.uint8)
    return (np.clip(peaks, 0.0, 1.0) * 255).astype(np.uint8)


def peaks_to_bytes(peaks: np.ndarray) -> bytes:
    return np.asarray(peaks, dtype=np.uint8).tobytes()


def peaks_from_bytes(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob or b"", dtype=np.uint8)


def paint_peaks(painter: QPainter, rect: QRectF, peaks: np.ndarray, color: QColor,
                played: float = 0.0, played_color: QColor | None = None) -> None:
    """Mirrored bars centred vertically in ``rect``; bars left of ``played`` (0..1) in ``played_color``."""
    if peaks.size == 0:
        return
    painter.save()
    painter.setPen(Qt.PenStyle.NoPen)
    step = rect.width() / peaks.size
    bar = max(1.0, step * 0.6)
    mid = rect.center().y()
    for i, p in enumerate(peaks):
        x = rect.left() + i * step
        h = max(1.0, p / 255.0 * rect.height())
        painter.setBrush(played_color if played_color is not None and (i + 0.5) / peaks.size <= played else color)
        painter.drawRoundedRect(QRectF(x, mid - h / 2, bar, h), bar / 2, bar / 2)
    painter.restore()


def paint_cut(painter: QPainter, rect: QRectF, fraction: float, color: QColor) -> None:
    """A cut marker at ``fraction`` (0..1) of ``rect``'s width: a full-height line with a small triangle on top,
    where a continued song's new part starts."""
    x = rect.left() + min(1.0, max(0.0, fraction)) * rect.width()
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    pen = QPen(color, 1.5)
    painter.setPen(pen)
    painter.drawLine(QPointF(x, rect.top() - 3), QPointF(x, rect.bottom() + 3))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    painter.drawPolygon(QPolygonF([QPointF(x - 4, rect.top() - 6), QPointF(x + 4, rect.top() - 6),
                                   QPointF(x, rect.top() - 1)]))
    painter.restore()


def peaks_pixmap(peaks: np.ndarray, width: int, height: int, color: QColor, ratio: float = 1.0) -> QPixmap:
    pixmap = QPixmap(int(width * ratio), int(height * ratio))
    pixmap.setDevicePixelRatio(ratio)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    paint_peaks(painter, QRectF(0, 0, width, height), peaks, color)
    painter.end()
    return pixmap
