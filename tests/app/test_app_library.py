"""Library store: corrupt database, missing files, drag-out as WAV, rename/delete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from app.library.store import Library, SongRecord
from app.library.model import LibraryModel


def _song(folder: Path, name: str, fmt: str = "wav") -> Path:
    path = folder / f"{name}.{fmt}"
    t = np.arange(22_050) / 44_100
    audio = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)]).T * 0.5
    soundfile.write(str(path), audio, 44_100)
    return path


def test_corrupt_database_is_moved_aside_not_fatal(tmp_path):
    db = tmp_path / "library.sqlite3"
    db.write_bytes(b"this is not a database at all" * 100)
    lib = Library(db)
    assert lib.problems and "damaged" in lib.problems[0]
    assert list(tmp_path.glob("library.sqlite3.corrupt-*"))
    lib.add(SongRecord(title="fresh", audio_path=tmp_path / "x.wav"))
    assert [s.title for s in Library(db).songs()] == ["fresh"]


def test_corrupt_database_reported_in_window(qtbot, app_data, settings):
    from conftest import make_window

    app_data.mkdir(parents=True, exist_ok=True)
    (app_data / "library.sqlite3").write_bytes(b"\x00garbage" * 500)
    w, _ = make_window(qtbot, settings, None, lambda folder: None)
    assert "damaged" in w.status.text() and w.model.rowCount() == 0


def test_missing_audio_is_marked_and_skipped(tmp_path, qtbot):
    lib = Library(tmp_path / "lib.sqlite3")
    keep = lib.add(SongRecord(title="here", audio_path=_song(tmp_path, "here")))
    gone = lib.add(SongRecord(title="gone", audio_path=tmp_path / "gone.wav"))
    messages = lib.check_files()
    assert len(messages) == 1 and "gone" in messages[0]
    assert lib.get(gone).status == "missing" and lib.get(keep).status == "ready"
    model = LibraryModel(lib)
    row = model.row_of(gone)
    assert not (model.flags(model.index(row)) & model.flags(model.index(row)).ItemIsDragEnabled)


def _check_wav_url(mime) -> Path:
    urls = mime.urls()
    assert len(urls) == 1 and urls[0].isLocalFile()
    path = Path(urls[0].toLocalFile())
    info = soundfile.info(str(path))
    assert info.format == "WAV" and info.samplerate == 44_100 and info.channels == 2 and info.frames == 22_050
    return path


def test_drag_out_delivers_a_wav(tmp_path, qtbot):
    lib = Library(tmp_path / "lib.sqlite3")
    wav = lib.add(SongRecord(title="wav song", audio_path=_song(tmp_path, "a")))
    flac = lib.add(SongRecord(title="flac song", audio_path=_song(tmp_path, "b", "flac")))
    model = LibraryModel(lib)
    assert "text/uri-list" in model.mimeTypes()
    assert _check_wav_url(model.mimeData([model.index(model.row_of(wav))])) == tmp_path / "a.wav"
    exported = _check_wav_url(model.mimeData([model.index(model.row_of(flac))]))
    assert exported.suffix == ".wav" and exported.parent != tmp_path
    data, _ = soundfile.read(str(exported))
    orig, _ = soundfile.read(str(tmp_path / "b.flac"))
    assert np.allclose(data, orig, atol=1e-3)


def test_rename_and_delete(tmp_path):
    lib = Library(tmp_path / "lib.sqlite3")
    audio = _song(tmp_path, "c")
    song = lib.add(SongRecord(title="old", audio_path=audio))
    lib.rename(song, "  new name ")
    assert lib.get(song).title == "new name"
    lib.delete(song)
    assert lib.get(song) is None and not audio.exists()


def test_handing_over_a_missing_or_damaged_file_is_refused_and_shown(qtbot, fake_window, tmp_path):
    """Drag-out, export and Reveal check the file first; a recorded error is also shown (issue 16)."""
    from app import menus

    w = fake_window
    damaged = tmp_path / "damaged.wav"
    damaged.write_bytes(b"RIFF not really a wave file")
    gone = tmp_path / "gone.wav"
    for title, path in (("damaged", damaged), ("gone", gone)):
        song_id = w.library.add(SongRecord(title=title, audio_path=path))
        w.model.refresh()
        w.list.setCurrentIndex(w.model.index(w.model.row_of(song_id)))
        mime = w.model.mimeData([w.model.index(w.model.row_of(song_id))])
        assert mime.urls() == [] and title in w.model.last_drag_error
        assert w.status.text() == w.model.last_drag_error and w.status.property("level") == "error"
        w.show_message("")
        menus._export(w, "flac")  # refused before the save dialog would open
        assert w.status.property("level") == "error" and path.name in w.status.text()
    assert not list(tmp_path.glob("*.flac"))


def test_file_menu_opens_lyrics_from_a_text_file(qtbot, fake_window, tmp_path, monkeypatch):
    """File → Open Lyrics… loads the file's text with --lyrics-file's rules (backslash-n stays two characters)."""
    from PySide6.QtWidgets import QFileDialog

    path = tmp_path / "song.txt"
    path.write_text("[Verse]\nline one \\n stays\n", encoding="utf-8")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    file_menu = fake_window.menuBar().actions()[0].menu()
    action = next(a for a in file_menu.actions() if a.text() == "Open Lyrics…")
    action.trigger()
    assert fake_window.compose.lyrics.text() == "[Verse]\nline one \\n stays\n"
    assert not fake_window.compose.instrumental


# -- issue 16: a damaged, truncated or locked library keeps what can be kept ---------------------------
def test_one_damaged_page_keeps_every_readable_song(tmp_path, monkeypatch):
    """The issue's case: 120 songs, 1,500 bad bytes inside one page; all 120 were lost, 117 readable."""
    import sqlite3

    from library_faults import damage_one_page, record_songs, write_songs

    db = tmp_path / "library.sqlite3"
    lib = Library(db)
    record_songs(lib, write_songs(tmp_path / "songs", 120, monkeypatch))
    lib.rename(1, "Renamed by the user")
    lib.close()
    damage_one_page(db)
    damaged = db.read_bytes()
    with sqlite3.connect(db) as check:  # the damage is real: sqlite itself reports it
        assert check.execute("PRAGMA quick_check").fetchone()[0] != "ok"

    lib = Library(db)
    songs = lib.songs()
    assert len(songs) >= 117, len(songs)
    assert len({s.audio_path for s in songs}) == len(songs)
    assert all(s.audio_path.is_file() and s.title.startswith(("Song ", "Renamed")) for s in songs)
    assert "Renamed by the user" in {s.title for s in songs}  # kept rows keep the user's edits
    aside = list(tmp_path.glob("library.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # moved aside untouched, never deleted
    assert len(lib.problems) == 1 and f"{len(songs)} songs could be read from it" in lib.problems[0]
    assert lib.save_problem() is None
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_salvage_reads_past_a_damaged_page_one_id_at_a_time(tmp_path, monkeypatch):
    """A range scan over the damaged page stops or skips silently; the ids it missed are read singly."""
    from app.library.salvage import salvage_rows
    from app.library.store import COLUMNS
    from library_faults import damage_one_page, record_songs, write_songs

    db = tmp_path / "library.sqlite3"
    lib = Library(db)
    record_songs(lib, write_songs(tmp_path / "songs", 120, monkeypatch))
    lib.close()
    damage_one_page(db)
    rows = salvage_rows(db, COLUMNS)
    assert len(rows) >= 117 and [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert set(rows[0]) == set(COLUMNS)
    assert salvage_rows(tmp_path / "absent.sqlite3", COLUMNS) == []
    (tmp_path / "junk.sqlite3").write_bytes(b"junk" * 100)
    assert salvage_rows(tmp_path / "junk.sqlite3", COLUMNS) == []


def test_truncated_library_starts_afresh_with_a_message(tmp_path):
    db = tmp_path / "library.sqlite3"
    Library(db).add(SongRecord(title="a", audio_path=tmp_path / "a.wav"))
    full = db.read_bytes()
    for size, words in ((0, "was empty"), (60, "cut short to 60 bytes")):
        for old in tmp_path.glob("library.sqlite3*"):
            old.unlink()
        db.write_bytes(full[:size])
        lib = Library(db)
        assert lib.songs() == [] and lib.save_problem() is None
        assert len(lib.problems) == 1 and words in lib.problems[0] and "songs folder" in lib.problems[0]
        lib.close()
    assert [p.read_bytes() for p in tmp_path.glob("library.sqlite3.corrupt-*")] == [full[:60]]


def test_locked_library_is_not_damaged(tmp_path):
    """Another process holds the lock: wait (bounded), then say so; the file is left alone."""
    import time

    from library_faults import locked_by_another_process

    db = tmp_path / "library.sqlite3"
    lib = Library(db)
    lib.add(SongRecord(title="kept", audio_path=tmp_path / "kept.wav"))
    lib.close()
    with locked_by_another_process(db):
        start = time.monotonic()
        lib = Library(db, lock_wait_s=0.5)
        assert 0.4 < time.monotonic() - start < 5
        assert len(lib.problems) == 1 and "in use by another Khala" in lib.problems[0]
        assert "in use by another Khala" in lib.save_problem()
        assert lib.songs() == []
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert lib.save_problem() is None and [s.title for s in lib.songs()] == ["kept"]  # free again: usable


def test_a_short_lock_is_waited_for(tmp_path):
    from library_faults import locked_by_another_process

    db = tmp_path / "library.sqlite3"
    Library(db).add(SongRecord(title="kept", audio_path=tmp_path / "kept.wav"))
    with locked_by_another_process(db, release_after_s=0.3):
        lib = Library(db, lock_wait_s=10)
    assert lib.problems == [] and [s.title for s in lib.songs()] == ["kept"]


def test_a_file_is_recorded_once(tmp_path):
    lib = Library(tmp_path / "lib.sqlite3")
    audio = _song(tmp_path, "once")
    (tmp_path / "link").symlink_to(tmp_path)
    first = lib.add(SongRecord(title="once", audio_path=audio))
    assert lib.add(SongRecord(title="again", audio_path=tmp_path / "link" / "once.wav")) == first
    assert lib.add_many([SongRecord(title="again", audio_path=audio)]) == []
    assert [s.title for s in lib.songs()] == ["once"]


def test_read_only_folder_without_a_library_file(tmp_path):
    from library_faults import read_only

    folder = tmp_path / "data"
    folder.mkdir()
    with read_only(folder):
        lib = Library(folder / "library.sqlite3")
        assert lib.songs() == [] and len(lib.problems) == 1 and "cannot use its song library" in lib.problems[0]
        assert lib.save_problem() == lib.problems[0]
    assert not (folder / "library.sqlite3").exists()


def test_damaged_library_in_a_read_only_folder_is_listed_not_moved(tmp_path, monkeypatch):
    from library_faults import damage_one_page, read_only, record_songs, write_songs

    folder = tmp_path / "data"
    folder.mkdir()
    lib = Library(folder / "library.sqlite3")
    record_songs(lib, write_songs(tmp_path / "songs", 120, monkeypatch))
    lib.close()
    damage_one_page(folder / "library.sqlite3")
    damaged = (folder / "library.sqlite3").read_bytes()
    with read_only(folder):
        lib = Library(folder / "library.sqlite3")
        assert len(lib.songs()) >= 117
        assert "could not be moved aside" in lib.problems[0] and lib.save_problem() == lib.problems[0]
    assert [p.name for p in folder.iterdir()] == ["library.sqlite3"]
    assert (folder / "library.sqlite3").read_bytes() == damaged
