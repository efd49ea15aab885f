"""At launch: make the library match the songs folder again.

``engine.song_file.recover`` finishes or undoes saves a kill interrupted and removes stale
temporary files of ours; then every complete song in the folder (audio + a sidecar naming it,
either layout ``read_song`` accepts) that the library lacks is added back: songs written just
before a kill, or lost with a damaged or truncated library. A worker thread (app.jobs.Job) reads
the sidecars and each new song's waveform (about 0.1 s for a 2-minute WAV, so a whole rebuilt
library takes a while); the GUI thread adds the records in batches as they come.
"""

from __future__ import annotations

import atexit
import logging
import time
from pathlib import Path
from typing import Iterator

from PySide6.QtCore import QCoreApplication, QObject, Signal

from app.jobs import Job, WorkFn
from app.library.store import Library, LibraryError, SongRecord, record_from_song, resolved_path
from engine.events import CancelToken
from engine.song_file import Recovery, find_songs, recover

log = logging.getLogger(__name__)

BATCH = 16  # records per batch handed to the GUI thread …
BATCH_S = 0.5  # … or fewer, at least this often
_running: set["Reconciler"] = set()  # alive until their thread has finished, whatever the window does
_exit_hook = None


def _stop_all() -> None:
    """At exit (a smoke test, a quit without the event loop): no thread may outlive its QThread."""
    for reconciler in list(_running):
        reconciler.stop()


def reconcile_work(songs_dir: Path, known_paths: list[str], add: bool = True) -> WorkFn:
    """The job: yields the Recovery, then lists of SongRecords for the songs the library lacks."""

    def work(cancel: CancelToken) -> Iterator[object]:
        try:
            yield recover(songs_dir)
        except OSError as exc:  # a read-only folder: nothing of ours can be removed there
            log.warning("recovering %s failed: %s", songs_dir, exc)
        if not add:
            return
        known = {resolved_path(p) for p in known_paths}
        batch: list[SongRecord] = []
        last = time.monotonic()
        for song in find_songs(songs_dir):
            cancel.check()
            if resolved_path(song.audio_path) in known:
                continue
            batch.append(record_from_song(song.audio_path, song.sidecar_path, song.sidecar))
            if len(batch) >= BATCH or time.monotonic() - last >= BATCH_S:
                yield batch
                batch, last = [], time.monotonic()
        if batch:
            yield batch

    return work


def added_back_message(count: int) -> str:
    if count == 1:
        return "1 song found in the songs folder was added back to the library."
    return f"{count} songs found in the songs folder were added back to the library."


class Reconciler(QObject):
    """Runs the reconcile job once. ``added(n)`` after each batch recorded; ``done(message)`` at the
    end (the message is "" when nothing was added back)."""

    added = Signal(int)
    done = Signal(str)

    def __init__(self, library: Library, songs_dir: Path) -> None:
        super().__init__()  # no parent: it outlives a window closed while it runs
        self.library, self.songs_dir = library, Path(songs_dir)
        self.count = 0
        self.recovery: Recovery | None = None
        self.problem = ""
        self.job: Job | None = None

    def start(self) -> None:
        can_save = self.library.save_problem() is None
        self.job = Job(reconcile_work(self.songs_dir, self.library.audio_paths() if can_save else [], can_save), self)
        self.job.event.connect(self._on_event)
        self.job.failed.connect(self._on_failed)
        self.job.finished.connect(self._on_finished)
        global _exit_hook
        if not _exit_hook:  # registered after Qt's own exit hook (made with the app), so it runs first
            _exit_hook = atexit.register(_stop_all)
        _running.add(self)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)
        self.job.start()

    def stop(self, wait_ms: int = 10_000) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.job.wait(wait_ms)

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def _on_event(self, event: object) -> None:
        if isinstance(event, Recovery):
            self.recovery = event
            if event.completed or event.removed:
                log.info("songs folder: %d interrupted saves finished, %d temporary files removed",
                         len(event.completed), len(event.removed))
        elif isinstance(event, list) and not self.problem:
            try:
                ids = self.library.add_many(event)
            except LibraryError as exc:
                self.problem = str(exc)
                self.stop(0)
                return
            self.count += len(ids)
            if ids:
                self.added.emit(len(ids))

    def _on_failed(self, message: str) -> None:
        self.problem = f"The songs folder {self.songs_dir} could not be checked: {message}"

    def _on_finished(self) -> None:
        _running.discard(self)
        if self.problem:
            self.done.emit(self.problem)
        else:
            self.done.emit(added_back_message(self.count) if self.count else "")
