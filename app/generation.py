"""The one generation controller: prepare a request → run it as a Job → add its songs to the library.

The window's Generate button, the tray's Quick Generate and the memory warning's "Generate
Anyway" all call ``submit``; ``prepare`` is the one check before a song starts. The job's
worker thread runs ``engine.pipeline`` (imported there only: the app never imports torch) and
writes each song with ``engine.song_file.write_song``; the GUI thread only adds the record.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, Signal

from app import memory_check, paths
from app.jobs import Job
from app.library.store import Library, record_from_song
from app.progress import ProgressTracker
from app.settings import Settings
from engine.errors import KhalaError
from engine.extend import continued_title
from engine.events import WRITE, CancelToken, Log, Progress, Song, Stage
from engine.remote.protocol import TRACKS_PER_JOB, check_server_request
from engine.request import Continuation, SongRequest
from engine.song_file import SavedSong, slug, song_title, write_song

PipelineFactory = Callable[[Path], Any]


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
    """Owns the running job. Signals carry everything the window shows; none touch widgets."""

    message = Signal(str, str)  # text, level ("", "warn", "error")
    progress = Signal(int, str)  # percent, status text
    busy_changed = Signal(bool)
    song_added = Signal(int)  # library id
    log = Signal(str)
    memory_warning = Signal(object, str, object)  # the prepared request, the warning, its continuation
    notify = Signal(str, str)  # title, text

    def __init__(self, settings: Settings, library: Library, provider: PipelineProvider,
                 weights_dir: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings, self.library, self.provider = settings, library, provider
        self.weights_dir = weights_dir
        self.job: Job | None = None
        self.tracker: ProgressTracker | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def target(self) -> Path | str | None:
        """Where songs are made: a Khala server's URL (Settings → Engine) or the weights folder."""
        return self.settings.server_url or self.weights_dir

    def prepare(self, request: SongRequest) -> tuple[SongRequest | None, str]:
        """The request as it will run, or None and the reason, checked before any work."""
        if self.busy:
            return None, "A song is already being made; wait or cancel it first."
        remote = bool(self.settings.server_url)
        try:
            request.validate()
            if remote:
                for warning in check_server_request(request):
                    self.log.emit(warning)
        except KhalaError as exc:
            return None, str(exc)
        problem = ((None if remote else weights_problem(self.weights_dir))
                   or paths.check_writable_dir(self.settings.songs_dir) or self.library.save_problem())
        if problem:
            return None, problem
        if self.settings.max_tokens and not remote:
            request = dataclasses.replace(request, max_tokens=self.settings.max_tokens)
        return request, ""

    def submit(self, request: SongRequest, check_memory: bool = True,
               continuation: Continuation | None = None) -> bool:
        """Start a song (``continuation``: extend or regenerate a song from a point); False when it
        did not start (the reason went out as a message)."""
        request, problem = self.prepare(request)
        if request is None or (continuation is not None and self.settings.server_url):
            self.message.emit(problem or "Extending a song needs this Mac's engine (Settings → Engine).", "error")
            return False
        remote = bool(self.settings.server_url)
        if check_memory and not remote:
            warning = (memory_check.memory_warning(request, self.weights_dir) if continuation is None else
                       memory_check.continuation_warning(request, self.weights_dir, continuation.cut_frame))
            if warning:
                self.message.emit(warning, "warn")
                self.memory_warning.emit(request, warning, continuation)
                return False
        self.settings.last_request = request
        self.tracker = ProgressTracker(max(request.variations, TRACKS_PER_JOB) if remote else request.variations)
        self.job = Job(generation_work(self.provider, self.target, request, self.settings.songs_dir,
                                       self.settings.audio_format, continuation), self)
        self.job.event.connect(self._on_event)
        self.job.failed.connect(lambda m: self.message.emit(m, "error"))
        self.job.cancelled.connect(lambda: self.message.emit("Cancelled. Nothing was kept from the unfinished song.", ""))
        self.job.finished.connect(self._on_finished)
        self.busy_changed.emit(True)
        self.message.emit("Starting…", "")
        self.job.start()
        return True

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.message.emit("Cancelling…", "")

    def _on_event(self, event: object) -> None:
        if isinstance(event, (Stage, Progress)) and self.tracker is not None:
            snap = self.tracker.on_stage(event) if isinstance(event, Stage) else self.tracker.on_progress(event)
            if not (self.job and self.job.token.cancelled):
                self.progress.emit(snap.percent, snap.text)
        elif isinstance(event, Log):
            self.log.emit(event.text)
        elif isinstance(event, SavedSong):
            song_id = self.library.add(record_from_song(event.audio_path, event.sidecar_path, event.sidecar,
                                                        event.audio))
            self.song_added.emit(song_id)
            self.notify.emit("Song ready", f"“{event.sidecar.get('title', '')}” is in your library.")

    def _on_finished(self) -> None:
        job, self.job = self.job, None
        self.busy_changed.emit(False)
        if job is not None and not job.token.cancelled and not job.failed_message:
            self.message.emit("Done. Double-click a song to play it.", "")
