"""List model over the library, with drag-out that always delivers a WAV file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractListModel, QMimeData, QModelIndex, QPersistentModelIndex, Qt, QUrl, Signal

from app import paths
from app.library.store import Library, SongRecord
from engine.extend import format_time

RecordRole = Qt.ItemDataRole.UserRole + 1
QueueRole = Qt.ItemDataRole.UserRole + 2  # app.library.queue_store.QueuedSong of a queue row
ParentNoteRole = Qt.ItemDataRole.UserRole + 3  # "extended from “X”" for a song that continues another, else ""
CutRole = Qt.ItemDataRole.UserRole + 4  # where such a song's new part starts, 0..1 of its length, else None
Index = QModelIndex | QPersistentModelIndex


def safe_name(title: str) -> str:
    name = re.sub(r"[^\w\- .,()&]+", "", title, flags=re.UNICODE).strip(" .") or "song"
    return name[:80]


def audio_problem(path: Path) -> str | None:
    """None when ``path`` is a readable audio file, else one line saying what is wrong."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        return f"The audio file {path} is missing."
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError) as exc:
        return f"The audio file {path.name} cannot be read: {str(exc).splitlines()[0][:200]}"
    if info.frames <= 0:
        return f"The audio file {path.name} holds no audio."
    return None


def parent_note(rec: SongRecord, titles: dict[str, str]) -> str:
    """"extended from “X”" (continued at its end) or "from “X” at 1:23" (regenerated from a point); the
    parent's current library title when it is listed (``titles``: audio path → title), else its file name."""
    parent = rec.parent or {}
    name = Path(str(parent.get("song") or "")).name
    if not name:
        return ""
    title = titles.get(str(Path(rec.audio_path).with_name(name))) or str(parent.get("title") or "") or Path(name).stem
    cut, frames, seconds = parent.get("cut_frame"), parent.get("frames"), parent.get("cut_seconds")
    if isinstance(cut, int) and isinstance(frames, int) and cut >= frames:
        return f"extended from “{title}”"
    at = f" at {format_time(seconds)}" if isinstance(seconds, (int, float)) else ""
    return f"from “{title}”{at}"


def cut_fraction(rec: SongRecord) -> float | None:
    seconds = (rec.parent or {}).get("cut_seconds")
    if not isinstance(seconds, (int, float)) or not rec.duration_s > 0:
        return None
    return min(1.0, max(0.0, seconds / rec.duration_s))


def wav_for(rec: SongRecord) -> Path:
    """The song as a WAV file: its own file, or a WAV exported once into the cache."""
    src = Path(rec.audio_path)
    problem = audio_problem(src)
    if problem:
        raise OSError(problem)
    if src.suffix.lower() == ".wav":
        return src
    import soundfile

    from engine.audio import write_audio
    from engine.song_file import read_song, tags_for, SongFileError

    out = paths.cache_dir() / "drag" / f"{safe_name(rec.title)}-{rec.id}.wav"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        data, rate = soundfile.read(str(src), dtype="float32", always_2d=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            tags = tags_for(read_song(src).sidecar)
        except SongFileError:
            tags = None
        write_audio(out, data.T, rate, tags)  # keeps the title, tags, lyrics and seed for Finder and DAWs
    return out


class LibraryModel(QAbstractListModel):
    """Queue rows first (running, waiting, held: app.generation's ``items()``), then the songs."""

    drag_failed = Signal(str)  # a song could not be dragged out: the window shows why

    def __init__(self, library: Library, parent=None) -> None:
        super().__init__(parent)
        self.library = library
        self._songs: list[SongRecord] = library.songs()
        self._queue: list[Any] = []
        self._titles = {str(s.audio_path): s.title for s in self._songs}
        self.last_drag_error = ""

    def refresh(self) -> None:
        self.beginResetModel()
        self._songs = self.library.songs()
        self._titles = {str(s.audio_path): s.title for s in self._songs}
        self.endResetModel()

    def set_queue(self, items: list[Any]) -> None:
        self.beginResetModel()
        self._queue = list(items)
        self.endResetModel()

    def queue_count(self) -> int:
        return len(self._queue)

    def queue_item(self, row: int) -> Any:
        return self._queue[row] if 0 <= row < len(self._queue) else None

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._queue) + len(self._songs)

    def record(self, row: int) -> SongRecord | None:
        row -= len(self._queue)
        return self._songs[row] if 0 <= row < len(self._songs) else None

    def row_of(self, song_id: int) -> int:
        return next((i + len(self._queue) for i, s in enumerate(self._songs) if s.id == song_id), -1)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        item = self.queue_item(index.row()) if index.isValid() else None
        if item is not None:
            if role == QueueRole:
                return item
            return item.title if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole) else None
        rec = self.record(index.row()) if index.isValid() else None
        if rec is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return rec.title
        if role == Qt.ItemDataRole.ToolTipRole:
            note = " (audio file missing)" if rec.status == "missing" else ""
            parent = parent_note(rec, self._titles)
            parent = f"\n{parent[0].upper()}{parent[1:]}" if parent else ""
            return f"{rec.title}{note}{parent}\n{rec.tags}\n{rec.audio_path}"
        if role == RecordRole:
            return rec
        if role == ParentNoteRole:
            return parent_note(rec, self._titles)
        if role == CutRole:
            return cut_fraction(rec)
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if index.isValid() and self.queue_item(index.row()) is not None:
            return Qt.ItemFlag.ItemIsEnabled  # its buttons act; the row is not a song to select or drag
        base = super().flags(index)
        rec = self.record(index.row()) if index.isValid() else None
        if rec is not None and rec.status != "missing":
            base |= Qt.ItemFlag.ItemIsDragEnabled
        return base

    def mimeTypes(self) -> list[str]:
        return ["text/uri-list"]

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        mime = QMimeData()
        urls = []
        self.last_drag_error = ""
        for index in indexes:
            rec = self.record(index.row())
            if rec is None:
                continue
            try:
                urls.append(QUrl.fromLocalFile(str(wav_for(rec))))
            except Exception as exc:  # noqa: BLE001 - missing/unreadable file: drag the rest
                self.last_drag_error = f"Cannot drag “{rec.title}”: {exc}"
                self.drag_failed.emit(self.last_drag_error)
        mime.setUrls(urls)
        return mime
