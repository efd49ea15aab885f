"""The song library: one SQLite file in the app data folder.

A corrupt database is moved aside and a fresh one started; a song whose audio file has
gone is marked "missing". Neither is fatal: both become messages in ``problems``."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.request import SongRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS songs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    request_json TEXT NOT NULL DEFAULT '{}',
    seed INTEGER,
    duration_s REAL NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ready',
    audio_path TEXT NOT NULL,
    sidecar_path TEXT NOT NULL DEFAULT '',
    timings_json TEXT NOT NULL DEFAULT '{}',
    peaks BLOB
)"""
COLUMNS = ("id", "title", "tags", "request_json", "seed", "duration_s", "created_at", "status",
           "audio_path", "sidecar_path", "timings_json", "peaks")
# Added for extended songs (issue 11): the sidecar's "parent" ({song, cut_frame, cut_seconds, frames}).
# Libraries from before it get the column on open; without it (a read-only file) songs list without parents.
PARENT_COLUMN = "parent_json TEXT NOT NULL DEFAULT '{}'"


@dataclass
class SongRecord:
    title: str
    audio_path: Path
    tags: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    duration_s: float = 0.0
    created_at: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))
    status: str = "ready"
    sidecar_path: Path | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    peaks: bytes = b""
    id: int | None = None
    parent: dict[str, Any] = field(default_factory=dict)  # the song it continues, from the sidecar; {} if none

    def song_request(self) -> SongRequest:
        data = dict(self.request)
        if self.seed is not None:
            data["seed"] = self.seed
        return SongRequest.from_dict(data)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "SongRecord":
        return cls(id=row["id"], title=row["title"], tags=row["tags"], request=_loads(row["request_json"]),
                   seed=row["seed"], duration_s=row["duration_s"], created_at=row["created_at"],
                   status=row["status"], audio_path=Path(row["audio_path"]),
                   sidecar_path=Path(row["sidecar_path"]) if row["sidecar_path"] else None,
                   timings=_loads(row["timings_json"]), peaks=bytes(row["peaks"] or b""),
                   parent=_loads(row["parent_json"]) if "parent_json" in row.keys() else {})


def record_from_song(audio_path: Path, sidecar_path: Path, sidecar: dict[str, Any],
                     audio: Any = None) -> SongRecord:
    """The library record of a song on disk, from its sidecar (engine.song_file's one layout);
    the waveform thumbnail from ``audio`` [channels, n] when given, else read from the file."""
    from app.player.waveform import compute_peaks, peaks_from_file, peaks_to_bytes

    request = sidecar.get("request") if isinstance(sidecar.get("request"), dict) else {}
    seed = sidecar.get("seed")
    timings = sidecar.get("timings_s") if isinstance(sidecar.get("timings_s"), dict) else {}
    peaks = compute_peaks(audio) if audio is not None else peaks_from_file(audio_path)
    return SongRecord(title=str(sidecar.get("title") or Path(audio_path).stem), audio_path=Path(audio_path),
                      tags=request.get("tags") or request.get("genre") or "", request=request,
                      seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
                      duration_s=float(sidecar.get("seconds") or 0.0),
                      created_at=str(sidecar.get("created_at") or datetime.now().isoformat(timespec="seconds")),
                      sidecar_path=Path(sidecar_path), timings=timings, peaks=peaks_to_bytes(peaks),
                      parent=sidecar.get("parent") if isinstance(sidecar.get("parent"), dict) else {})


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _has_parent_column(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "parent_json" for row in conn.execute("PRAGMA table_info(songs)"))


def _add_parent_column(conn: sqlite3.Connection) -> None:
    if _has_parent_column(conn):
        return
    try:
        with conn:
            conn.execute(f"ALTER TABLE songs ADD COLUMN {PARENT_COLUMN}")
    except sqlite3.OperationalError:  # read-only or locked: the library still opens, without parents
        pass


class Library:
    def __init__(self, db_path: Path) -> None:
        self.path = Path(db_path)
        self.problems: list[str] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            self._conn = None
            shutil.move(str(self.path), str(aside))
            for suffix in ("-journal", "-wal", "-shm"):
                extra = self.path.with_name(self.path.name + suffix)
                if extra.exists():
                    shutil.move(str(extra), str(aside) + suffix)
            self.problems.append(f"The song library was damaged ({exc}); it was moved to {aside.name} "
                                 "and a new, empty library was started. Your audio files are untouched.")
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path))
        try:
            conn.row_factory = sqlite3.Row
            status = conn.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise sqlite3.DatabaseError(status)
            with conn:
                conn.execute(SCHEMA)
            conn.execute("SELECT " + ", ".join(COLUMNS) + " FROM songs LIMIT 1").fetchall()
            _add_parent_column(conn)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def save_problem(self) -> str | None:
        """Why a new song could not be recorded right now (read-only or locked database), else None."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            return f"The song library cannot be saved to ({exc}); songs would be made but not listed."
        return None

    def close(self) -> None:
        self._conn.close()

    def add(self, rec: SongRecord) -> int:
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO songs (title, tags, request_json, seed, duration_s, created_at, status, audio_path,"
                " sidecar_path, timings_json, peaks) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rec.title, rec.tags, json.dumps(rec.request), rec.seed, rec.duration_s, rec.created_at,
                 rec.status, str(rec.audio_path), str(rec.sidecar_path or ""), json.dumps(rec.timings),
                 rec.peaks))
            if rec.parent and _has_parent_column(self._conn):
                self._conn.execute("UPDATE songs SET parent_json = ? WHERE id = ?",
                                   (json.dumps(rec.parent), cur.lastrowid))
        rec.id = int(cur.lastrowid)
        return rec.id

    def songs(self) -> list[SongRecord]:
        rows = self._conn.execute("SELECT * FROM songs ORDER BY created_at DESC, id DESC").fetchall()
        return [SongRecord.from_row(r) for r in rows]

    def get(self, song_id: int) -> SongRecord | None:
        row = self._conn.execute("SELECT * FROM songs WHERE id = ?", (song_id,)).fetchone()
        return SongRecord.from_row(row) if row else None

    def rename(self, song_id: int, title: str) -> None:
        with self._conn:
            self._conn.execute("UPDATE songs SET title = ? WHERE id = ?", (title.strip(), song_id))

    def set_status(self, song_id: int, status: str) -> None:
        with self._conn:
            self._conn.execute("UPDATE songs SET status = ? WHERE id = ?", (status, song_id))

    def delete(self, song_id: int, delete_files: bool = True) -> None:
        rec = self.get(song_id)
        with self._conn:
            self._conn.execute("DELETE FROM songs WHERE id = ?", (song_id,))
        if rec and delete_files:
            from engine.song_file import codes_path
            for path in (rec.audio_path, rec.sidecar_path, codes_path(rec.audio_path)):
                if path:
                    Path(path).unlink(missing_ok=True)

    def check_files(self) -> list[str]:
        """Mark songs whose audio file is gone as missing (and back when it returns)."""
        messages = []
        for rec in self.songs():
            exists = rec.audio_path.is_file()
            if not exists and rec.status != "missing":
                self.set_status(rec.id, "missing")
                messages.append(f"“{rec.title}”: its audio file {rec.audio_path} is missing.")
            elif exists and rec.status == "missing":
                self.set_status(rec.id, "ready")
        self.problems.extend(messages)
        return messages
