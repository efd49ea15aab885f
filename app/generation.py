"""The one generation controller: prepare a request → run it as a Job → add its songs to the library.

The window's Generate button, the tray's Quick Generate and the memory warning's "Generate
Anyway" all call ``submit``, which adds the song to the queue; ``prepare`` is the one check
before a song is queued (and the start checks run again when its turn comes). The job's
worker thread runs ``engine.pipeline`` (imported there only: the app never imports torch) and
writes each song with ``engine.song_file.write_song``; the GUI thread only adds the record.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, Signal

from app import memory_check, paths
from app.jobs import Job
from app.library.queue_store import HELD, QUEUED, RUNNING, QueuedSong, QueueStore
from app.library.store import Library, LibraryError, record_from_song
from app.progress import ProgressTracker
from app.settings import Settings
from engine.errors import KhalaError
from engine.events import BACKBONE, LOAD_BACKBONE, WRITE, CancelToken, Log, Preview, Progress, Song, Stage
from engine.extend import continued_title
from engine.remote.protocol import TRACKS_PER_JOB, check_server_request
from engine.request import Continuation, SongRequest
from engine.song_file import SavedSong, slug, song_title, write_song

PipelineFactory = Callable[[Path], Any]
PREVIEW_EVERY_S = 10.0  # new audio between rough previews of the running song (the CLI's default too)


def real_pipeline_factory(target: Path | str, keep_loaded: bool = False) -> Any:
    """The engine for ``target``: a weights folder (this Mac) or a Khala server's URL."""
    if isinstance(target, str):
        from engine.remote.client import RemotePipeline  # torch-free

        return RemotePipeline(target)
    from engine.pipeline import Pipeline  # torch: only ever on the worker thread

    return Pipeline(target, keep_loaded=keep_loaded)


class PipelineProvider:
    """Creates the pipeline on first use (in the worker) and keeps it for the next song."""

    def __init__(self, factory: PipelineFactory = real_pipeline_factory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pipeline: Any = None
        self._dir: Path | None = None

    def get(self, target: Path | str) -> Any:
        """The engine for a weights folder or a server URL, made once per target."""
        with self._lock:
            if self._pipeline is None or self._dir != target:
                self._pipeline = self._factory(target)
                self._dir = target
            return self._pipeline


def weights_problem(folder: Path | None) -> str | None:
    if folder is None:
        return "The model is not downloaded yet. Choose File → Download Model…"
    try:
        from engine.weights.folder import locate_weights

        locate_weights(folder)
    except KhalaError as exc:
        return f"The model in {folder} cannot be used: {exc}"
    return None


def song_path(songs_dir: Path, request: SongRequest, fmt: str, variation: int, seed: int | None) -> Path:
    title = song_title(request, variation, request.variations)
    return songs_dir / f"{datetime.now():%Y-%m-%d-%H%M%S}-{slug(title)}-{seed if seed is not None else 'x'}.{fmt}"


def generation_work(provider: PipelineProvider, target: Path | str, request: SongRequest, songs_dir: Path,
                    fmt: str = "wav", continuation: Continuation | None = None,
                    preview_every: float | None = None) -> Callable[[CancelToken], Iterator[object]]:
    """The job: the engine's events, with each Song replaced by the SavedSong written for it."""

    def work(cancel: CancelToken) -> Iterator[object]:
        pipeline = provider.get(target)
        cancel.check()
        options = {"continuation": continuation} if continuation is not None else {}
        if preview_every:
            options["preview_every"] = preview_every
        for event in pipeline.generate(request, cancel, **options):
            if isinstance(event, Song):
                cancel.check()
                yield Stage(WRITE, event.variation)
                seed = event.metadata.get("seed")
                title = song_title(request, event.variation, request.variations)
                if continuation is not None:
                    title = continued_title(continuation.title or title, continuation)
                yield write_song(event, song_path(songs_dir, request, fmt, event.variation, seed), overwrite=False,
                                 title=title)
            else:
                yield event

    return work


class GenerationController(QObject):
    """Owns the queue and the running job. Signals carry everything the window shows; none touch widgets.

    ``submit`` adds a request to the queue (after the one check and, for this Mac, the memory
    question: it is asked when the person is there to answer, not minutes later when the song's
    turn comes); one song runs at a time and the next starts when a job finishes, is cancelled
    or fails. The queue is kept in the library database (app.library.queue_store): after a quit
    or crash every request left is HELD, offered as Run / Discard. A failed song is HELD with
    its reason; a cancelled or finished one leaves the queue."""

    message = Signal(str, str)  # text, level ("", "warn", "error")
    progress = Signal(int, str)  # percent, status text (of the running song)
    busy_changed = Signal(bool)  # a song is being made (True again for each song the queue starts)
    song_added = Signal(int)  # library id
    log = Signal(str)
    memory_warning = Signal(object, str, object)  # the prepared request, the warning, its continuation
    notify = Signal(str, str)  # title, text
    queue_changed = Signal()  # items() changed: added, started, removed, held
    preview = Signal(int, object)  # queue id, engine.events.Preview of the running song
    preview_complete = Signal(int)  # queue id: its preview will not grow any more

    def __init__(self, settings: Settings, library: Library, provider: PipelineProvider,
                 weights_dir: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings, self.library, self.provider = settings, library, provider
        self.weights_dir = weights_dir
        self.job: Job | None = None
        self.tracker: ProgressTracker | None = None
        self.store = QueueStore(library)
        self.current: QueuedSong | None = None
        self.last_preview: Preview | None = None
        self._items: list[QueuedSong] = []
        self._unsaved = 0  # ids for requests the database would not take (kept in memory only)
        self._stopping = False
        self.problems: list[str] = []  # what reading the queue back found (the window shows them)
        self._job_problem = False  # the running job already reported a problem: no "Done" over it
        self.restored = self._restore()

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def target(self) -> Path | str | None:
        """Where songs are made: a Khala server's URL (Settings → Engine) or the weights folder."""
        return self.settings.server_url or self.weights_dir

    # -- the queue -------------------------------------------------------------------------
    def items(self) -> list[QueuedSong]:
        """The running song, then the waiting ones in order, then the held ones."""
        order = {RUNNING: 0, QUEUED: 1, HELD: 2}
        return sorted(self._items, key=lambda item: order[item.state])

    def waiting(self) -> int:
        return sum(item.state == QUEUED for item in self._items)

    def _restore(self) -> int:
        """Requests left from the last run are offered again, never started by themselves."""
        try:
            self.store.hold_all("Waiting when Khala last quit")
            self._items, problems = self.store.load()
        except sqlite3.Error as exc:
            if not self.library.problems:  # a locked or damaged library has said so already
                self.problems.append(f"The songs waiting from last time could not be read ({exc}).")
            return 0
        self.problems.extend(problems)
        return len(self._items)

    def _save(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except sqlite3.Error as exc:
            self.message.emit(f"The song queue could not be saved ({exc}); it runs, but a quit would lose it.", "warn")
            return None

    def prepare(self, request: SongRequest) -> tuple[SongRequest | None, str]:
        """The request as it will run, or None and the reason, checked before any work."""
        remote = bool(self.settings.server_url)
        try:
            request.validate()
            if remote:
                for warning in check_server_request(request):
                    self.log.emit(warning)
        except KhalaError as exc:
            return None, str(exc)
        problem = self._start_problem()
        if problem:
            return None, problem
        if self.settings.max_tokens and not remote:
            request = dataclasses.replace(request, max_tokens=self.settings.max_tokens)
        return request, ""

    def _start_problem(self) -> str | None:
        """What stops any song from starting now (the model, the songs folder, the library)."""
        remote = bool(self.settings.server_url)
        return ((None if remote else weights_problem(self.weights_dir))
                or paths.check_writable_dir(self.settings.songs_dir) or self.library.save_problem())

    def submit(self, request: SongRequest, check_memory: bool = True,
               continuation: Continuation | None = None) -> bool:
        """Add a song to the queue (``continuation``: extend or regenerate a song from a point); it starts
        at once when nothing else runs. False when it was not queued (the reason went out as a message,
        or the memory question did)."""
        request, problem = self.prepare(request)
        if request is None or (continuation is not None and self.settings.server_url):
            self.message.emit(problem or "Extending a song needs this Mac's engine (Settings → Engine).", "error")
            return False
        remote = bool(self.settings.server_url)
        if check_memory and not remote:
            warning = memory_check.song_warning(request, self.weights_dir, continuation)
            if warning:
                self.message.emit(warning, "warn")
                self.memory_warning.emit(request, warning, continuation)
                return False
        self.settings.last_request = request
        item = self._save(lambda: self.store.add(request, continuation))
        if item is None:
            self._unsaved -= 1
            item = QueuedSong(self._unsaved, request, continuation)
        self._items.append(item)
        self.queue_changed.emit()
        if self.busy:
            self.message.emit(f"Added “{item.title}” to the queue ({self.waiting()} waiting).", "")
        self._start_next()
        return True

    def remove(self, item_id: int) -> None:
        """Remove a waiting or held song; the running one is cancelled instead."""
        item = self._find(item_id)
        if item is None:
            return
        if item.state == RUNNING:
            self.cancel()
            return
        self._drop(item)

    def run_held(self, item_id: int) -> None:
        """A held song joins the end of the queue (and starts when nothing runs)."""
        item = self._find(item_id)
        if item is None or item.state != HELD:
            return
        self._items.remove(item)
        item.state, item.note = QUEUED, ""
        self._items.append(item)
        if item.id > 0:
            self._save(lambda: (self.store.move_to_end(item.id), self.store.set_state(item.id, QUEUED)))
        self.queue_changed.emit()
        self._start_next()

    def cancel(self) -> None:
        """Cancel the running song; the next one in the queue starts when it has stopped."""
        if self.job is not None:
            self.job.cancel()
            self.message.emit("Cancelling…", "")

    def shutdown(self) -> None:
        """Khala is quitting: the running song is cancelled but kept, with the waiting ones, for next time."""
        self._stopping = True
        if self.job is not None:
            self.job.cancel()

    def _find(self, item_id: int) -> QueuedSong | None:
        return next((item for item in self._items if item.id == item_id), None)

    def _drop(self, item: QueuedSong) -> None:
        if item in self._items:
            self._items.remove(item)
        if item.id > 0:
            self._save(lambda: self.store.remove(item.id))
        self.queue_changed.emit()

    def _hold(self, item: QueuedSong, note: str) -> None:
        item.state, item.note = HELD, note
        if item.id > 0:
            self._save(lambda: self.store.set_state(item.id, HELD, note))

    # -- running ---------------------------------------------------------------------------
    def _start_next(self) -> None:
        if self.busy or self._stopping:
            return
        item = next((i for i in self._items if i.state == QUEUED), None)
        if item is None:
            return
        problem = self._start_problem()
        if problem:  # it would stop every song: all of them wait for the person
            for waiting in [i for i in self._items if i.state == QUEUED]:
                self._hold(waiting, problem)
            self.queue_changed.emit()
            self.message.emit(problem, "error")
            return
        request, remote = item.request, bool(self.settings.server_url)
        item.state = RUNNING
        if item.id > 0:
            self._save(lambda: self.store.set_state(item.id, RUNNING))
        self.current, self.last_preview = item, None
        self.tracker = ProgressTracker(max(request.variations, TRACKS_PER_JOB) if remote else request.variations)
        preview_every = None if remote else PREVIEW_EVERY_S
        if preview_every and memory_check.song_warning(request, self.weights_dir, item.continuation, preview=True):
            preview_every = None  # the decoder beside the backbone would not fit: the song comes first
            self.log.emit("Rough previews are off for this song: with them it would need more memory than "
                          "this Mac has.")
        self.job = Job(generation_work(self.provider, self.target, request, self.settings.songs_dir,
                                       self.settings.audio_format, item.continuation, preview_every), self)
        self.job.event.connect(self._on_event)
        self.job.failed.connect(lambda m: self.message.emit(m, "error"))
        self.job.cancelled.connect(self._on_cancelled)
        self.job.finished.connect(self._on_finished)
        self._job_problem = False
        self.queue_changed.emit()
        self.busy_changed.emit(True)
        self.message.emit("Starting…", "")
        self.job.start()

    def _on_cancelled(self) -> None:
        if not self._stopping:
            self.message.emit("Cancelled. Nothing was kept from the unfinished song.", "")

    def _on_event(self, event: object) -> None:
        if isinstance(event, (Stage, Progress)) and self.tracker is not None:
            snap = self.tracker.on_stage(event) if isinstance(event, Stage) else self.tracker.on_progress(event)
            if not (self.job and self.job.token.cancelled):
                self.progress.emit(snap.percent, snap.text)
            if isinstance(event, Stage) and event.name not in (LOAD_BACKBONE, BACKBONE) and self.current is not None:
                self.preview_complete.emit(self.current.id)
        elif isinstance(event, Preview) and self.current is not None:
            self.last_preview = event
            self.preview.emit(self.current.id, event)
        elif isinstance(event, Log):
            self.log.emit(event.text)
        elif isinstance(event, SavedSong):
            try:
                song_id = self.library.add(record_from_song(event.audio_path, event.sidecar_path, event.sidecar,
                                                            event.audio))
            except LibraryError as exc:  # the song is on disk; the next launch adds it back
                self._job_problem = True
                self.message.emit(f"{event.audio_path.name} was saved, but the library could not list it: {exc}",
                                  "error")
                return
            self.song_added.emit(song_id)
            self.notify.emit("Song ready", f"“{event.sidecar.get('title', '')}” is in your library.")

    def _on_finished(self) -> None:
        job, self.job = self.job, None
        item, self.current = self.current, None
        if item is not None:
            self.preview_complete.emit(item.id)
            if job is not None and job.failed_message:
                self._hold(item, job.failed_message)
                self.notify.emit("Song not made", job.failed_message)
            elif self._stopping:
                item.state = QUEUED  # kept for the next launch (held there)
                if item.id > 0:
                    self._save(lambda: self.store.set_state(item.id, QUEUED))
            else:
                self._drop(item)
        self.queue_changed.emit()
        self.busy_changed.emit(False)
        done = job is not None and not job.token.cancelled and not job.failed_message and not self._job_problem
        self._start_next()
        if done and not self.busy:
            self.message.emit("Done. Double-click a song to play it.", "")
