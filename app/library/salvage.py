"""Read every readable song row out of a damaged library database (pure Python, no sqlite3 CLI).

A damaged page makes a scan fail, stop early or skip rows silently, so rows are read by ``id``
range, and every id a range did not return is looked up on its own: only the rows whose own
bytes (or whose leaf page's header) are damaged are lost. The file is opened ``immutable`` (read-only,
no locks, no journal rollback): salvaging never changes it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

CHUNK = 64  # ids per range query
GIVE_UP_AFTER = 4096  # consecutive ids without a readable row end the scan past the highest id
REQUIRED = ("id", "title", "audio_path")
MIN_ROW_BYTES = 8  # no row takes fewer bytes of the file
SPARSE_IDS = 1 << 20  # room for ids of deleted songs above that bound (a range query of none is cheap)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=ro&immutable=1", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def _columns(conn: sqlite3.Connection, wanted: tuple[str, ...]) -> list[str]:
    try:
        have = {row["name"] for row in conn.execute("PRAGMA table_info(songs)")}
    except sqlite3.DatabaseError:
        return []
    return [c for c in wanted if c in have] if all(c in have for c in REQUIRED) else []


def _highest_id(conn: sqlite3.Connection, cap: int) -> int | None:
    """The largest id a row can have: the smaller of max(id) and AUTOINCREMENT's counter (a damaged
    page can make either one huge), whichever can be read; never above ``cap``."""
    found = []
    for sql in ("SELECT max(id) FROM songs", "SELECT seq FROM sqlite_sequence WHERE name = 'songs'"):
        try:
            row = conn.execute(sql).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None and isinstance(row[0], int):
            found.append(row[0])
    return min(found + [cap]) if found else None


def _valid(row: dict[str, Any]) -> bool:
    """A row worth keeping: its text columns are text, its audio path is a full path, JSON parses."""
    if not isinstance(row.get("title"), str) or not isinstance(row.get("audio_path"), str):
        return False
    if not Path(row["audio_path"]).is_absolute():
        return False
    for key in ("request_json", "timings_json"):
        if key in row:
            try:
                json.loads(row[key] or "{}")
            except (TypeError, ValueError):
                return False
    return all(isinstance(row.get(k, ""), str) for k in ("tags", "created_at", "status", "sidecar_path"))


def salvage_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every readable, well-formed row of table ``songs`` in the database at ``path``, as dicts of
    ``columns`` (those the table has), in id order. Empty when nothing can be read."""
    try:
        size = Path(path).stat().st_size
        conn = _connect_read_only(path)
    except (OSError, sqlite3.Error):
        return []
    try:
        cols = _columns(conn, columns)
        if not cols:
            return []
        select = f"SELECT {', '.join(cols)} FROM songs"
        rows: dict[int, dict[str, Any]] = {}

        def read(sql: str, args: tuple) -> list[sqlite3.Row] | None:
            try:
                return conn.execute(sql, args).fetchall()
            except (sqlite3.DatabaseError, ValueError, OverflowError):
                return None

        cap = size // MIN_ROW_BYTES + SPARSE_IDS
        top = _highest_id(conn, cap)
        start, misses = 1, 0
        while start <= cap and (misses < GIVE_UP_AFTER or (top is not None and start <= top)):
            end = start + CHUNK - 1
            chunk = read(f"{select} WHERE id BETWEEN ? AND ? ORDER BY id", (start, end)) or []
            got = {r["id"] for r in chunk}
            if len(got) < CHUNK:  # a scan over a damaged page can stop early or skip rows silently
                chunk += [r for i in range(start, end + 1) if i not in got
                          for r in (read(f"{select} WHERE id = ?", (i,)) or [])]
            kept = [dict(r) for r in chunk if _valid(dict(r))]
            rows.update((r["id"], r) for r in kept)
            misses = 0 if kept else misses + CHUNK
            start = end + 1
        return [rows[i] for i in sorted(rows)]
    finally:
        conn.close()
