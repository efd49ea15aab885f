"""The song library: one SQLite file in the app data folder.

Nothing about it stops the app from opening; each fault becomes a message in ``problems``:
* locked by another process: wait up to LOCK_WAIT_S, then say so (the file is not touched);
* damaged: the file is moved aside (never deleted), every readable row is kept
  (app.library.salvage) and the rest comes back from the songs folder (app.library.reconcile);
* truncated to nothing: started afresh, rebuilt from the songs folder;
* read-only (file or folder): opened for listing; ``save_problem()`` says why no song can be
  recorded, before one is made;
* a song whose audio file has gone is marked "missing".

SQLite allows several processes on one file, so a second Khala is not refused: it simply
waits for the other's short writes (busy timeout)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from app.library.salvage import salvage_rows
from engine.errors import KhalaError
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
    peaks BLOB,
    parent_json TEXT NOT NULL DEFAULT '{}'
)"""
LOCK_WAIT_S = 5.0  # opening waits this long for another process's lock before saying so
SAVE_CHECK_WAIT_S = 1.0  # save_problem() runs on the GUI thread: a shorter wait
LIST_WAIT_S = 0.1  # listing a library still locked since launch: the window must not stall
COLUMNS = ("id", "title", "tags", "request_json", "seed", "duration_s", "created_at", "status",
           "audio_path", "sidecar_path", "timings_json", "peaks")
# Added for extended songs (issue 11): the sidecar's "parent" ({song, cut_frame, cut_seconds, frames, title}).
# A library from before it gets the column on open; without it (a read-only file) songs list without parents.
PARENT_COLUMN = "parent_json"


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
                   parent=_loads(row[PARENT_COLUMN]) if PARENT_COLUMN in row.keys() else {})


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


class LibraryError(KhalaError):
    """The library cannot be written right now; str() says why, for a person."""


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _has_parent_column(conn: sqlite3.Connection) -> bool:
    return any(row[1] == PARENT_COLUMN for row in conn.execute("PRAGMA table_info(songs)"))


def _add_parent_column(conn: sqlite3.Connection) -> None:
    if _has_parent_column(conn):
        return
    try:
        with conn:
            conn.execute(f"ALTER TABLE songs ADD COLUMN {PARENT_COLUMN} TEXT NOT NULL DEFAULT '{{}}'")
    except sqlite3.OperationalError:  # read-only or locked: the library still opens, without parents
        pass


def _error_kind(exc: sqlite3.Error) -> str:
    """"busy", "readonly", "cantopen", "io" or "damaged" (corrupt, not a database, wrong schema)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return "busy"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return "readonly"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) or "unable to open" in text:
        return "cantopen"
    if name.startswith(("SQLITE_IOERR", "SQLITE_FULL")) or "disk i/o" in text or "disk is full" in text:
        return "io"
    return "damaged"


class Library:
    """The songs, newest first. Opening never raises for a bad, locked or read-only database."""

    def __init__(self, db_path: Path, lock_wait_s: float | None = None) -> None:
        self.path = Path(db_path)
        self.lock_wait_s = LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
        self.problems: list[str] = []
        self._ready = False  # quick_check passed and the table exists (False while locked)
        self._no_file = ""  # why the library lives in memory only (its file cannot be used)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # reported below: the file cannot be opened
        self._conn = self._start()

    # -- opening ---------------------------------------------------------------------------------
    def _connect(self, wait_s: float) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=wait_s)
        conn.row_factory = sqlite3.Row
        return conn

    @property
    def connection(self) -> sqlite3.Connection:
        """The open database (app.library.queue_store keeps its ``queue`` table in the same file)."""
        return self._conn

    @staticmethod
    def _prepare(conn: sqlite3.Connection) -> None:
        """quick_check, the table (created if absent), its columns. sqlite3.Error otherwise."""
        status = conn.execute("PRAGMA quick_check").fetchone()[0]
        if status != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({str(status)[:120]})")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'songs'").fetchone() is None:
            with conn:
                conn.execute(SCHEMA)
        conn.execute("SELECT " + ", ".join(COLUMNS) + " FROM songs LIMIT 1").fetchall()
        _add_parent_column(conn)

    def _start(self) -> sqlite3.Connection:
        truncated = self._size() == 0
        try:
            conn = self._connect(self.lock_wait_s)
        except sqlite3.Error as exc:
            return self._in_memory(f"it cannot be opened ({exc})")
        try:
            self._prepare(conn)
        except sqlite3.Error as exc:
            kind = _error_kind(exc)
            if kind == "busy":
                self.problems.append(self._locked_message())
                return conn  # not ready: tried again when the library is next used
            conn.close()
            if kind != "damaged":
                return self._in_memory(f"it cannot be opened ({exc})")
            return self._replace_damaged(exc)
        self._ready = True
        if truncated:
            self.problems.append("The song library file was empty (cut short, perhaps by a crash or a full disk); "
                                 "it is being rebuilt from the songs in your songs folder.")
        problem = self._write_problem(conn)
        if problem:
            self.problems.append(problem)
        return conn

    def _size(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    def _in_memory(self, why: str) -> sqlite3.Connection:
        self._no_file = (f"Khala cannot use its song library {self.path}: {why}. Songs made now could not be "
                         "listed, so none will be made until this is fixed (then reopen Khala).")
        self.problems.append(self._no_file)
        conn = sqlite3.connect(":memory:")
        conn.row_factory = sqlite3.Row
        self._prepare(conn)
        self._ready = True
        return conn

    def _move_aside(self) -> Path:
        """The damaged file (and its journal files) renamed beside it; OSError if that fails."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        os.rename(self.path, aside)
        for suffix in ("-journal", "-wal", "-shm"):
            extra = self.path.with_name(self.path.name + suffix)
            if extra.exists():
                shutil.move(str(extra), str(aside) + suffix)
        return aside

    def _replace_damaged(self, exc: sqlite3.Error) -> sqlite3.Connection:
        """Keep every readable row in a fresh library; the damaged file stays beside it."""
        size = self._size()
        reason = f"cut short to {size} bytes" if size is not None and size < 512 else str(exc)[:160]
        try:
            aside = self._move_aside()
        except OSError as move_error:
            rows = salvage_rows(self.path, COLUMNS + (PARENT_COLUMN,))
            conn = self._in_memory(f"it is damaged ({reason}) and could not be moved aside "
                                   f"({move_error.strerror or move_error})")
            self._insert_rows(conn, rows)
            return conn
        rows = salvage_rows(aside, COLUMNS + (PARENT_COLUMN,))
        try:
            conn = self._connect(self.lock_wait_s)
            self._prepare(conn)
            self._insert_rows(conn, rows)
        except sqlite3.Error as new_error:
            conn = self._in_memory(f"a new library cannot be started ({new_error})")
            self._insert_rows(conn, rows)
            return conn
        self._ready = True
        n = len(rows)
        kept = f"{n} song{'s' if n != 1 else ''} could be read from it and kept" if n else "nothing in it could be read"
        self.problems.append(f"The song library was damaged ({reason}): {kept}; the damaged file is kept as "
                             f"{aside.name}. Songs in your songs folder that it lacked are being added back.")
        return conn

    @staticmethod
    def _insert_rows(conn: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
        with conn:
            for row in rows:
                cols = list(row)
                conn.execute(f"INSERT OR IGNORE INTO songs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             [row[c] for c in cols])

    def _ensure_ready(self, wait_s: float = LIST_WAIT_S) -> bool:
        """Finish opening a library that was locked at launch; False while it still is."""
        if self._ready:
            return True
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
            self._prepare(self._conn)
        except sqlite3.Error as exc:
            if _error_kind(exc) != "busy":
                self._conn.close()
                self._conn = self._replace_damaged(exc) if _error_kind(exc) == "damaged" else \
                    self._in_memory(f"it cannot be opened ({exc})")
            return self._ready
        finally:
            self._set_wait(self.lock_wait_s)
        self._ready = True
        return True

    def _set_wait(self, seconds: float) -> None:
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
        except sqlite3.Error:
            pass

    # -- can it be saved to? -------------------------------------------------------------------
    def _locked_message(self, wait_s: float | None = None) -> str:
        return (f"The song library is in use by another Khala (or another program) and was not freed within "
                f"{self.lock_wait_s if wait_s is None else wait_s:g} s. Nothing was changed; quit the other Khala "
                "(or wait for it), then try again. Songs cannot be made until then.")

    def _save_message(self, exc: sqlite3.Error, wait_s: float | None = None) -> str:
        kind = _error_kind(exc)
        if kind == "busy":
            return self._locked_message(wait_s)
        if kind == "readonly":
            return (f"Khala cannot save to its song library: {self.path} is read-only. Songs made now would not "
                    "be listed, so none will be made until it is writable (check its permissions, then reopen Khala).")
        if kind == "cantopen":
            return (f"Khala cannot save to its song library: its folder {self.path.parent} is read-only (the "
                    "library needs to create a file there while saving). Songs made now would not be listed, so "
                    "none will be made until the folder is writable.")
        return f"Khala cannot save to its song library ({str(exc)[:160]}); songs made now would not be listed."

    def _write_problem(self, conn: sqlite3.Connection, wait_s: float | None = None) -> str | None:
        """Try a real write (a journalled no-op, rolled back): catches a read-only file, a read-only
        folder (the journal cannot be created) and a lock held past ``wait_s``."""
        if conn.in_transaction:
            return None  # a write is under way on this connection: it is writable
        if wait_s is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                conn.execute(f"PRAGMA user_version = {version}")
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            return self._save_message(exc, wait_s)
        finally:
            if wait_s is not None:
                self._set_wait(self.lock_wait_s)
        return None

    def save_problem(self) -> str | None:
        """Why a new song could not be recorded right now (no usable file, read-only file or folder,
        locked), else None. Checked before a song is made."""
        if self._no_file:
            return self._no_file
        if not self._ensure_ready(SAVE_CHECK_WAIT_S):
            return self._locked_message(SAVE_CHECK_WAIT_S)
        if self._no_file:
            return self._no_file
        return self._write_problem(self._conn, SAVE_CHECK_WAIT_S)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; LibraryError (for a person) when the library cannot be written."""
        if not self._ensure_ready(SAVE_CHECK_WAIT_S):
            raise LibraryError(self._locked_message(SAVE_CHECK_WAIT_S))
        try:
            with self._conn:
                yield self._conn
        except sqlite3.Error as exc:
            raise LibraryError(self._save_message(exc, self.lock_wait_s)) from exc

    def close(self) -> None:
        self._conn.close()

    # -- songs ---------------------------------------------------------------------------------
    @staticmethod
    def _values(rec: SongRecord) -> tuple:
        return (rec.title, rec.tags, json.dumps(rec.request), rec.seed, rec.duration_s, rec.created_at,
                rec.status, str(rec.audio_path), str(rec.sidecar_path or ""), json.dumps(rec.timings), rec.peaks)

    @staticmethod
    def _by_name(conn: sqlite3.Connection) -> dict[str, list[tuple[int, str]]]:
        """Recorded songs by audio file name: (id, stored path)."""
        found: dict[str, list[tuple[int, str]]] = {}
        for row in conn.execute("SELECT id, audio_path FROM songs"):
            stored = str(row["audio_path"])
            found.setdefault(Path(stored).name, []).append((int(row["id"]), stored))
        return found

    @staticmethod
    def _id_of_file(by_name: dict[str, list[tuple[int, str]]], audio_path: Path) -> int | None:
        """The record naming this audio file (compared resolved), if any."""
        candidates = by_name.get(Path(audio_path).name, [])
        for song_id, stored in candidates:
            if stored == str(audio_path):
                return song_id
        target = resolved_path(audio_path) if candidates else ""
        return next((song_id for song_id, stored in candidates if resolved_path(stored) == target), None)

    def add(self, rec: SongRecord) -> int:
        """Record a song; a song whose audio file is already recorded is not added twice (its id is
        returned). LibraryError when the library cannot be written."""
        return self.add_many([rec], skip_known=False)[0]

    def add_many(self, records: list[SongRecord], skip_known: bool = True) -> list[int]:
        """Record several songs in one transaction. A record whose audio file is already in the
        library is left out (``skip_known``) or answered with the existing id."""
        ids: list[int] = []
        with self._writing() as conn:
            by_name = self._by_name(conn)
            for rec in records:
                existing = self._id_of_file(by_name, rec.audio_path)
                if existing is not None:
                    if not skip_known:
                        rec.id = existing
                        ids.append(existing)
                    continue
                cur = conn.execute(
                    "INSERT INTO songs (title, tags, request_json, seed, duration_s, created_at, status, audio_path,"
                    " sidecar_path, timings_json, peaks) VALUES (?,?,?,?,?,?,?,?,?,?,?)", self._values(rec))
                if rec.parent and _has_parent_column(conn):
                    conn.execute(f"UPDATE songs SET {PARENT_COLUMN} = ? WHERE id = ?",
                                 (json.dumps(rec.parent), cur.lastrowid))
                rec.id = int(cur.lastrowid)
                ids.append(rec.id)
                by_name.setdefault(Path(rec.audio_path).name, []).append((rec.id, str(rec.audio_path)))
        return ids

    def audio_paths(self) -> list[str]:
        """Every recorded audio path, as stored."""
        if not self._ensure_ready():
            return []
        return [str(r[0]) for r in self._conn.execute("SELECT audio_path FROM songs")]

    def songs(self) -> list[SongRecord]:
        """Newest first; none while the library is still locked since launch."""
        if not self._ensure_ready():
            return []
        rows = self._conn.execute("SELECT * FROM songs ORDER BY created_at DESC, id DESC").fetchall()
        return [SongRecord.from_row(r) for r in rows]

    def get(self, song_id: int) -> SongRecord | None:
        if not self._ensure_ready():
            return None
        row = self._conn.execute("SELECT * FROM songs WHERE id = ?", (song_id,)).fetchone()
        return SongRecord.from_row(row) if row else None

    def rename(self, song_id: int, title: str) -> None:
        with self._writing() as conn:
            conn.execute("UPDATE songs SET title = ? WHERE id = ?", (title.strip(), song_id))

    def set_status(self, song_id: int, status: str) -> None:
        with self._writing() as conn:
            conn.execute("UPDATE songs SET status = ? WHERE id = ?", (status, song_id))

    def delete(self, song_id: int, delete_files: bool = True) -> None:
        rec = self.get(song_id)
        with self._writing() as conn:
            conn.execute("DELETE FROM songs WHERE id = ?", (song_id,))
        if rec and delete_files:
            from engine.song_file import codes_path
            for path in (rec.audio_path, rec.sidecar_path, codes_path(rec.audio_path)):
                if path:
                    Path(path).unlink(missing_ok=True)

    def check_files(self) -> list[str]:
        """Mark songs whose audio file is gone as missing (and back when it returns). A library that
        cannot be written still gets the messages."""
        messages = []
        for rec in self.songs():
            exists = rec.audio_path.is_file()
            if not exists and rec.status != "missing":
                self._try_status(rec.id, "missing")
                messages.append(f"“{rec.title}”: its audio file {rec.audio_path} is missing.")
            elif exists and rec.status == "missing":
                self._try_status(rec.id, "ready")
        self.problems.extend(messages)
        return messages

    def _try_status(self, song_id: int | None, status: str) -> None:
        try:
            self.set_status(song_id, status)
        except LibraryError:
            pass


def resolved_path(path: Path | str) -> str:
    """``path`` made absolute with links resolved, as text: how two spellings of one file compare."""
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return str(path)
