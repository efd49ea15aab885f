"""Songs waiting to be made, kept in the library's SQLite file so a quit or a crash loses none.

One row per request, in the order they run (``position``). ``state`` is QUEUED (waits its
turn), RUNNING (being made now) or HELD (waits for the person: left over from the last time
Khala ran, or stopped by a problem; offered as Run / Discard). A continuation (extend or
regenerate from a point) keeps the parent's codes as an int16 .npy blob, so the row needs no
other file. The table lives beside ``songs`` on the Library's own connection (``connection``).
"""

from __future__ import annotations

import io
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from engine.errors import KhalaError
from engine.request import Continuation, SongRequest
from engine.song_file import song_title

QUEUED, RUNNING, HELD = "queued", "running", "held"
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    position INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    note TEXT NOT NULL DEFAULT '',
    request_json TEXT NOT NULL,
    codes BLOB,
    cut_frame INTEGER,
    parent TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
)"""


@dataclass
class QueuedSong:
    """One waiting (or running, or held) request. ``id`` is the row's; negative when it could not be saved."""

    id: int
    request: SongRequest
    continuation: Continuation | None = None
    state: str = QUEUED
    note: str = ""
    created_at: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))

    @property
    def title(self) -> str:
        title = song_title(self.request)
        if self.request.variations > 1:
            title += f" (×{self.request.variations})"
        if self.continuation is not None:
            title += " — extended" if self.continuation.cut_frame == self.continuation.codes.shape[1] else " — from a point"
        return title


def _codes_blob(continuation: Continuation | None) -> bytes | None:
    if continuation is None:
        return None
    buf = io.BytesIO()
    np.save(buf, np.asarray(continuation.codes).astype(np.int16), allow_pickle=False)
    return buf.getvalue()


def _from_row(row: sqlite3.Row) -> QueuedSong:
    """A row back as a QueuedSong; ValueError (or KhalaError) when the row is damaged."""
    data = json.loads(row["request_json"])
    if not isinstance(data, dict):
        raise ValueError("the request is not an object")
    request = SongRequest.from_dict(data)
    continuation = None
    if row["codes"] is not None:
        codes = np.load(io.BytesIO(bytes(row["codes"])), allow_pickle=False)
        continuation = Continuation(codes.astype(np.int64), int(row["cut_frame"]), str(row["parent"]))
        continuation.validate()
    state = row["state"] if row["state"] in (QUEUED, RUNNING, HELD) else HELD
    return QueuedSong(int(row["id"]), request, continuation, state, str(row["note"]), str(row["created_at"]))


class QueueStore:
    """The ``queue`` table. Every method raises sqlite3.Error when the database cannot be written or
    read; the caller keeps its own list and says so (the queue still runs, it is just not kept)."""

    def __init__(self, library: Any) -> None:
        self.library = library
        self._schema_on: sqlite3.Connection | None = None

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = self.library.connection  # looked up each time: the library may reopen (or rebuild) its file
        if conn is not self._schema_on:
            with conn:
                conn.execute(SCHEMA)
            self._schema_on = conn
        return conn

    def add(self, request: SongRequest, continuation: Continuation | None = None, state: str = QUEUED) -> QueuedSong:
        item = QueuedSong(0, request, continuation, state)
        conn = self._conn
        with conn:
            cur = conn.execute(
                "INSERT INTO queue (position, state, request_json, codes, cut_frame, parent, created_at) "
                "VALUES ((SELECT COALESCE(MAX(position), 0) + 1 FROM queue), ?, ?, ?, ?, ?, ?)",
                (state, json.dumps(request.to_dict()), _codes_blob(continuation),
                 continuation.cut_frame if continuation else None, continuation.parent if continuation else "",
                 item.created_at))
        item.id = int(cur.lastrowid)
        return item

    def set_state(self, item_id: int, state: str, note: str = "") -> None:
        with self._conn:
            self._conn.execute("UPDATE queue SET state = ?, note = ? WHERE id = ?", (state, note, item_id))

    def move_to_end(self, item_id: int) -> None:
        with self._conn:
            self._conn.execute("UPDATE queue SET position = (SELECT COALESCE(MAX(position), 0) + 1 FROM queue) "
                               "WHERE id = ?", (item_id,))

    def remove(self, item_id: int) -> None:
        with self._conn:
            self._conn.execute("DELETE FROM queue WHERE id = ?", (item_id,))

    def load(self) -> tuple[list[QueuedSong], list[str]]:
        """Every row in running order, and a line for each damaged row (which is removed)."""
        items, problems = [], []
        for row in self._conn.execute("SELECT * FROM queue ORDER BY position, id").fetchall():
            try:
                items.append(_from_row(row))
            except (ValueError, TypeError, KeyError, KhalaError) as exc:
                problems.append(f"A waiting song could not be read back and was dropped ({str(exc)[:200]}).")
                self.remove(int(row["id"]))
        return items, problems

    def hold_all(self, note: str) -> None:
        """After a relaunch: nothing starts by itself; every row waits for Run or Discard."""
        with self._conn:
            self._conn.execute("UPDATE queue SET state = ?, note = ? WHERE state != ?", (HELD, note, HELD))
