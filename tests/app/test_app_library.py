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
