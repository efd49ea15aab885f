"""Messages when songs' files or folders are not what the app expects (found by a QA pass)."""

from __future__ import annotations

from pathlib import Path

from conftest import generate_one
from PySide6.QtWidgets import QFileDialog

from app import paths
from app.jobs import readable_error
from app.menus import _export


def select(w, song_id: int) -> None:
    w.list.setCurrentIndex(w.model.index(w.model.row_of(song_id)))


def test_a_song_file_deleted_behind_the_apps_back_is_said_to_be_missing(qtbot, fake_window):
    w = fake_window
    rec = generate_one(qtbot, w)
    Path(rec.audio_path).unlink()
    w.play_row(w.model.row_of(rec.id))
    assert w.status.property("level") == "error"
    assert "is missing" in w.status.text() and "System error" not in w.status.text()


def test_a_songs_folder_that_is_a_file_is_said_to_be_a_file(tmp_path):
    (tmp_path / "songs").write_text("x")
    problem = paths.check_writable_dir(tmp_path / "songs")
    assert problem is not None and "is a file, not a folder" in problem and "File exists" not in problem


def test_a_file_error_names_the_file():
    message = readable_error(FileNotFoundError(2, "No such file or directory", "/nowhere/out.wav"))
    assert "/nowhere/out.wav" in message and "No such file or directory" in message


def test_export_suggests_a_file_in_the_songs_folder_whatever_the_title(qtbot, fake_window, monkeypatch):
    w = fake_window
    rec = generate_one(qtbot, w)
    w.library.rename(rec.id, "../../AC/DC cover")
    w.model.refresh()
    select(w, rec.id)
    offered = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: offered.append(a[2]) or ("", ""))
    _export(w, "flac")
    start = Path(offered[0])
    assert start.parent == Path(w.settings.songs_dir) and start.suffix == ".flac"
    assert "AC" in start.name and "DC cover" in start.name


def test_rename_refuses_a_control_character_or_a_pasted_page_and_keeps_the_title(qtbot, fake_window, monkeypatch):
    from PySide6.QtWidgets import QInputDialog

    from app.menus import rename

    w = fake_window
    rec = generate_one(qtbot, w)
    for typed, said in (("a\x00b", "control character (U+0000)"), ("x" * 100_000, "at most 200 characters")):
        select(w, rec.id)
        monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: (typed, True))
        rename(w)
        assert said in w.status.text() and w.status.property("level") == "error"
        assert w.library.get(rec.id).title == rec.title
    for title in ("Rain 😀 שלום", "Family 👨\u200d👩\u200d👧 \u200fשלום"):  # a zero-width joiner, a right-to-left mark
        monkeypatch.setattr(QInputDialog, "getText", lambda *a, t=title, **k: (t, True))
        select(w, rec.id)
        rename(w)
        assert w.library.get(rec.id).title == title
