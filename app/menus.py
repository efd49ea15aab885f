"""Menus and the actions behind them: export, reveal, settings, use-these-settings, rename, delete.

The window passes itself as a ``MenuHost`` (what the actions need, described structurally), so
this module never imports the window.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Protocol

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu, QMenuBar

from app import extend
from app.jobs import Job
from app.library.model import audio_problem
from app.library.store import Library, LibraryError, SongRecord
from engine.extend import format_time
from engine.request import control_character


class MenuHost(Protocol):
    settings: Any
    library: Library
    controller: Any
    model: Any
    player: Any
    compose: Any
    list: Any
    song_menu: QMenu
    download_action: QAction

    def menuBar(self) -> QMenuBar: ...
    def selected_record(self) -> SongRecord | None: ...
    def show_message(self, text: str, level: str = "") -> None: ...
    def ask(self, title: str, text: str) -> bool: ...
    def open_first_launch(self) -> None: ...
    def open_settings(self) -> None: ...
    def request_quit(self) -> bool: ...
    def toggle_play(self) -> None: ...
    @property
    def busy(self) -> bool: ...


def export_song(rec: SongRecord, dest: Path) -> Path:
    """Write ``rec``'s song to ``dest`` (another format is fine) with its sidecar and codes, via the
    engine's one song writer; the sidecar keeps the original request, seed and timings."""
    import numpy as np

    from app.player.player import read_audio_file
    from engine.events import Song
    from engine.song_file import SongFileError, load_codes, read_song, write_song

    frames, rate = read_audio_file(rec.audio_path)
    metadata: dict[str, Any] = {"request": rec.request, "seed": rec.seed, "timings_s": rec.timings}
    codes = None
    try:
        on_disk = read_song(rec.audio_path)
        metadata = dict(on_disk.sidecar)
        codes = load_codes(on_disk)
    except SongFileError:
        pass
    song = Song(audio=np.ascontiguousarray(frames.T), sample_rate=rate, codes=codes, metadata=metadata)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return write_song(song, dest, title=rec.title, created_at=rec.created_at).audio_path


def _checked(w: MenuHost) -> SongRecord | None:
    rec = w.selected_record()
    if rec is None:
        w.show_message("Select a song in the library first.", "error")
        return None
    problem = audio_problem(rec.audio_path)
    if problem:
        w.library.check_files()
        w.model.refresh()
        w.show_message(problem, "error")
        return None
    return rec


def _export(w: MenuHost, fmt: str) -> None:
    rec = _checked(w)
    if rec is None:
        return
    safe = "".join("-" if c in "/\\:" or not c.isprintable() else c for c in rec.title).strip(" .")[:120]
    start = str(Path(w.settings.songs_dir) / f"{safe or 'Song'}.{fmt}")  # a title is never a path
    name, _ = QFileDialog.getSaveFileName(w, f"Export As {fmt.upper()}", start, f"{fmt.upper()} audio (*.{fmt})")
    if not name:
        return
    dest = Path(name).with_suffix(f".{fmt}")

    def work(_cancel):
        yield export_song(rec, dest)

    job = Job(work, w)
    job.event.connect(lambda path: w.show_message(f"Exported {Path(path).name}."))
    job.failed.connect(lambda m: w.show_message(m, "error"))
    w._export_job = job.start()


def reveal(w: MenuHost) -> None:
    rec = w.selected_record()
    if rec is not None and audio_problem(rec.audio_path):
        w.show_message(audio_problem(rec.audio_path), "error")
    target = Path(rec.audio_path) if rec else Path(w.settings.songs_dir)
    if sys.platform == "darwin" and target.exists():
        import subprocess

        subprocess.Popen(["open", "-R", str(target)])
        return
    folder = target if target.is_dir() else target.parent
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


def use_settings(w: MenuHost) -> None:
    rec = w.selected_record()
    if rec is not None:  # the compose panel stays usable while songs are made (the queue)
        w.compose.set_request(rec.song_request())
        w.show_message(f"Settings of “{rec.title}” loaded (seed {rec.seed}).")


MAX_TITLE_CHARS = 200  # a title is one line of the library; longer ones are pasted by mistake


def title_problem(title: str) -> str | None:
    """None when ``title`` can name a song, else why not (one line)."""
    if len(title) > MAX_TITLE_CHARS:
        return f"a title can have at most {MAX_TITLE_CHARS} characters (this one has {len(title):,})."
    at = control_character(title)
    if at is not None:
        return f"the title contains a control character (U+{ord(title[at]):04X}); remove it."
    return None


def rename(w: MenuHost) -> None:
    rec = w.selected_record()
    if rec is None:
        return
    title, ok = QInputDialog.getText(w, "Rename Song", "Title:", text=rec.title)
    if ok and title.strip():
        problem = title_problem(title.strip())
        if problem:
            w.show_message(f"Cannot rename “{rec.title}”: {problem}", "error")
            return
        try:
            w.library.rename(rec.id, title)
        except LibraryError as exc:
            w.show_message(f"Cannot rename “{rec.title}”: {exc}", "error")
        w.model.refresh()


def delete(w: MenuHost) -> None:
    rec = w.selected_record()
    if rec is None:
        return
    if w.ask("Delete Song?", f"Delete “{rec.title}” and its audio file? This cannot be undone."):
        if w.player.song_id == rec.id:
            w.player.stop()
            w.player.song_id = None
        try:
            w.library.delete(rec.id)
        except LibraryError as exc:
            w.show_message(f"Cannot delete “{rec.title}”: {exc}", "error")
        w.model.refresh()


def _with_song(w: MenuHost, act: Callable[[SongRecord], object]) -> None:
    rec = _checked(w)
    if rec is not None:
        act(rec)


def regenerate_label(w: MenuHost) -> str:
    """"Regenerate From Here (1:23)" while the selected song is in the player, else without the time."""
    seconds = extend.player_position(w, w.selected_record())
    return "Regenerate From Here" + (f" ({format_time(seconds)})" if seconds is not None else "")


def _action(menu: QMenu, text: str, slot: Callable[[], object],
            shortcut: str | QKeySequence | None = None) -> QAction:
    act = menu.addAction(text)
    act.triggered.connect(lambda _=False: slot())
    if shortcut:
        act.setShortcut(QKeySequence(shortcut))
    return act


def build_menus(w: MenuHost) -> None:
    bar = w.menuBar()
    file = bar.addMenu("&File")
    _action(file, "Open Lyrics…", lambda: w.compose.open_lyrics_file(w), QKeySequence.StandardKey.Open)
    file.addSeparator()
    export = file.addMenu("Export As")
    for fmt in ("wav", "flac", "mp3"):
        _action(export, f"{fmt.upper()}…", lambda f=fmt: _export(w, f))
    _action(file, "Reveal in Finder" if sys.platform == "darwin" else "Show in Folder", lambda: reveal(w))
    file.addSeparator()
    w.download_action = _action(file, "Download Model…", w.open_first_launch)
    settings = _action(file, "Settings…", w.open_settings, QKeySequence.StandardKey.Preferences)
    settings.setMenuRole(QAction.MenuRole.PreferencesRole)
    file.addSeparator()
    quit_act = _action(file, "Quit Khala", w.request_quit, QKeySequence.StandardKey.Quit)
    quit_act.setMenuRole(QAction.MenuRole.QuitRole)
    song = bar.addMenu("&Song")
    _action(song, "Play / Pause", w.toggle_play)
    _action(song, "Use These Settings", lambda: use_settings(w))
    song.addSeparator()
    _action(song, "Extend…", lambda: _with_song(w, lambda rec: setattr(w, "extend_dialog",
                                                                     extend.open_extend_dialog(w, rec))))
    here = _action(song, "Regenerate From Here", lambda: _with_song(w, lambda rec: extend.regenerate_here(w, rec)))
    song.aboutToShow.connect(lambda: here.setText(regenerate_label(w)))
    song.addSeparator()
    _action(song, "Rename…", lambda: rename(w))
    _action(song, "Delete…", lambda: delete(w), QKeySequence.StandardKey.Delete)
    w.song_menu = song
    w.list.customContextMenuRequested.connect(lambda pos: song.exec(w.list.viewport().mapToGlobal(pos)))

