"""Menus and the actions behind them: export, reveal, settings, use-these-settings, rename, delete."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu

from app.audio_io import write_audio, write_json_atomic
from app.jobs import Job

if TYPE_CHECKING:
    from app.window import MainWindow


def export_song(src: Path, dest: Path, sidecar: dict) -> Path:
    from app.player.player import read_audio_file

    frames, rate = read_audio_file(src)
    write_audio(dest, frames.T, rate)
    write_json_atomic(dest.with_suffix(".json"), sidecar)
    return dest


def _export(w: "MainWindow", fmt: str) -> None:
    rec = w.selected_record()
    if rec is None:
        w.show_message("Select a song in the library first.", "error")
        return
    start = str(Path(w.settings.songs_dir) / f"{rec.title}.{fmt}")
    name, _ = QFileDialog.getSaveFileName(w, f"Export As {fmt.upper()}", start, f"{fmt.upper()} audio (*.{fmt})")
    if not name:
        return
    dest = Path(name).with_suffix(f".{fmt}")
    sidecar = {"title": rec.title, "file": dest.name, "request": rec.request, "seed": rec.seed,
               "seconds": rec.duration_s, "created_at": rec.created_at, "timings": rec.timings}
    job = Job(lambda _cancel: iter([export_song(rec.audio_path, dest, sidecar)]), w)
    job.event.connect(lambda path: w.show_message(f"Exported {Path(path).name}."))
    job.failed.connect(lambda m: w.show_message(m, "error"))
    w._export_job = job.start()


def reveal(w: "MainWindow") -> None:
    rec = w.selected_record()
    target = Path(rec.audio_path) if rec else Path(w.settings.songs_dir)
    if sys.platform == "darwin" and target.exists():
        import subprocess

        subprocess.Popen(["open", "-R", str(target)])
        return
    folder = target if target.is_dir() else target.parent
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


def use_settings(w: "MainWindow") -> None:
    rec = w.selected_record()
    if rec is not None and not w.busy:
        w.compose.set_request(rec.song_request())
        w.show_message(f"Settings of “{rec.title}” loaded (seed {rec.seed}).")


def rename(w: "MainWindow") -> None:
    rec = w.selected_record()
    if rec is None:
        return
    title, ok = QInputDialog.getText(w, "Rename Song", "Title:", text=rec.title)
    if ok and title.strip():
        w.library.rename(rec.id, title)
        w.model.refresh()


def delete(w: "MainWindow") -> None:
    rec = w.selected_record()
    if rec is None:
        return
    if w.ask("Delete Song?", f"Delete “{rec.title}” and its audio file? This cannot be undone."):
        if w.player.song_id == rec.id:
            w.player.stop()
            w.player.song_id = None
        w.library.delete(rec.id)
        w.model.refresh()


def _action(menu: QMenu, text: str, slot, shortcut: str | QKeySequence | None = None) -> QAction:
    act = menu.addAction(text)
    act.triggered.connect(lambda _=False: slot())
    if shortcut:
        act.setShortcut(QKeySequence(shortcut))
    return act


def build_menus(w: "MainWindow") -> None:
    from app.settings_dialog import open_settings

    bar = w.menuBar()
    file = bar.addMenu("&File")
    export = file.addMenu("Export As")
    for fmt in ("wav", "flac", "mp3"):
        _action(export, f"{fmt.upper()}…", lambda f=fmt: _export(w, f))
    _action(file, "Reveal in Finder" if sys.platform == "darwin" else "Show in Folder", lambda: reveal(w))
    file.addSeparator()
    w.download_action = _action(file, "Download Model…", lambda: w.open_first_launch()
                                if hasattr(w, "open_first_launch") else None)
    settings = _action(file, "Settings…", lambda: open_settings(w), QKeySequence.StandardKey.Preferences)
    settings.setMenuRole(QAction.MenuRole.PreferencesRole)
    file.addSeparator()
    quit_act = _action(file, "Quit Khala", w.request_quit, QKeySequence.StandardKey.Quit)
    quit_act.setMenuRole(QAction.MenuRole.QuitRole)
    song = bar.addMenu("&Song")
    _action(song, "Play / Pause", w.toggle_play)
    _action(song, "Use These Settings", lambda: use_settings(w))
    _action(song, "Rename…", lambda: rename(w))
    _action(song, "Delete…", lambda: delete(w), QKeySequence.StandardKey.Delete)
    w.song_menu = song
    w.list.customContextMenuRequested.connect(lambda pos: song.exec(w.list.viewport().mapToGlobal(pos)))
