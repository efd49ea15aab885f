"""Faults for library tests: real songs on disk, one damaged page, a read-only path, a lock held by
another process. Each fault is the real thing (bytes on disk, file modes, an OS process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from app.library.store import Library, record_from_song
from conftest import fake_metadata
from engine.events import Song
from engine.request import SongRequest
from engine.song_file import SavedSong, write_song

LYRICS = "[Verse]\nWalking down the empty street tonight\nEvery window holds a different light\n" * 2


def make_song(i: int, seconds: float = 0.1) -> Song:
    """A short song with the engine's real metadata keys (a realistic sidecar and library row)."""
    request = SongRequest(tags="Pop, Piano, Female Vocals", lyrics=LYRICS, seed=i)
    n = int(44_100 * seconds)
    t = np.arange(n) / 44_100
    audio = np.stack([0.4 * np.sin(2 * np.pi * (220 + i) * t)] * 2).astype(np.float32)
    return Song(audio=audio, sample_rate=44_100, codes=np.full((64, 2), i % 1024, np.int64),
                metadata=fake_metadata(request, i, 0, 2, seconds), variation=0)


def write_songs(folder: Path, count: int, monkeypatch: pytest.MonkeyPatch) -> list[SavedSong]:
    """``count`` complete songs (audio + sidecar + codes) written by engine.song_file.write_song.
    fsync is skipped: durability is not under test here, and it costs 20 ms a song."""
    folder.mkdir(parents=True, exist_ok=True)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", lambda fd: None)
        return [write_song(make_song(i), folder / f"song-{i:03d}.wav", title=f"Song {i}") for i in range(count)]


def record_songs(library: Library, saved: list[SavedSong]) -> None:
    library.add_many([record_from_song(s.audio_path, s.sidecar_path, s.sidecar, s.audio) for s in saved])


def leaf_pages(db: Path) -> list[int]:
    """Page numbers (0-based) of b-tree table leaf pages (type byte 0x0D)."""
    data = db.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    return [p for p in range(1, len(data) // size) if data[p * size] == 0x0D]


def damage_one_page(db: Path, count: int = 1500, seed: int = 0) -> tuple[int, int]:
    """Overwrite the last ``count`` bytes of a leaf page in the middle of the file (where its rows
    are) with random bytes; (offset, page size)."""
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    pages = leaf_pages(db)
    page = pages[len(pages) // 2]
    offset = (page + 1) * size - count
    data[offset:offset + count] = np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))
    return offset, size


def _writable(path: Path) -> bool:
    try:
        if path.is_dir():
            probe = path / ".khala-probe"
            probe.write_bytes(b"")
            probe.unlink()
        else:
            with open(path, "ab"):
                pass
    except OSError:
        return False
    return True


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (file or folder) read-only for this process: its write bits cleared, and as root
    (who ignores them) the immutable flag set. Skips the test where neither works."""
    mode = path.stat().st_mode
    immutable = False
    os.chmod(path, mode & ~0o222)
    try:
        if _writable(path) and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
        if _writable(path):
            pytest.skip("cannot make a path read-only here")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        os.chmod(path, mode)


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE songs SET title = title")
print("locked", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
else:
    sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextmanager
def locked_by_another_process(db: Path, release_after_s: float | None = None) -> Iterator[subprocess.Popen]:
    """Another process holds an exclusive lock on ``db`` until the block ends (or ``release_after_s``)."""
    args = [sys.executable, "-c", HOLD_LOCK, str(db)] + ([str(release_after_s)] if release_after_s else [])
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.wait(timeout=30)
