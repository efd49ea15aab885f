"""The work a generation does on the worker thread: run the pipeline, write each song
atomically, and hand back a finished library record. Imports engine.pipeline (torch)
only when a generation actually starts."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from app.audio_io import write_audio, write_json_atomic
from app.library.store import SongRecord
from app.player.waveform import compute_peaks, peaks_to_bytes
from engine.request import SongRequest
from engine.events import CancelToken, Song

PipelineFactory = Callable[[Path], Any]


@dataclass
class SavedSong:
    """A song whose audio and sidecar are fully on disk; ready for the library."""

    record: SongRecord


def real_pipeline_factory(weights_dir: Path, keep_loaded: bool = False) -> Any:
    from engine.pipeline import Pipeline  # torch: only ever on the worker thread

    return Pipeline(weights_dir, keep_loaded=keep_loaded)


class PipelineProvider:
    """Creates the pipeline on first use (in the worker) and keeps it for the next song."""

    def __init__(self, factory: PipelineFactory = real_pipeline_factory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pipeline: Any = None
        self._dir: Path | None = None

    def get(self, weights_dir: Path) -> Any:
        with self._lock:
            if self._pipeline is None or self._dir != weights_dir:
                self._pipeline = self._factory(weights_dir)
                self._dir = weights_dir
            return self._pipeline


def song_title(request: SongRequest) -> str:
    if request.description.strip():
        words = request.description.split()
        return " ".join(words[:6]) + ("…" if len(words) > 6 else "")
    tags = [t.strip() for t in request.tags.split(",") if t.strip()]
    if tags:
        return " · ".join(tags[:3])
    return request.genre.strip() or "Untitled"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "song"


def save_song(song: Song, request: SongRequest, songs_dir: Path, fmt: str = "wav") -> SavedSong:
    meta = json.loads(json.dumps(song.metadata or {}, default=str))
    seed = meta.get("seed", request.seed)
    title = song_title(request) + (f" ({song.variation + 1})" if request.variations > 1 else "")
    stamp = datetime.now()
    stem = f"{stamp:%Y-%m-%d-%H%M%S}-{_slug(title)}-{seed if seed is not None else 'x'}"
    audio_path = songs_dir / f"{stem}.{fmt}"
    n = 1
    while audio_path.exists():
        n += 1
        audio_path = songs_dir / f"{stem}-{n}.{fmt}"
    write_audio(audio_path, song.audio, song.sample_rate)
    sidecar = audio_path.with_suffix(".json")
    write_json_atomic(sidecar, {"title": title, "file": audio_path.name, "request": request.to_dict(),
                                "seed": seed, "sample_rate": song.sample_rate, "seconds": song.seconds,
                                "metadata": meta})
    record = SongRecord(title=title, audio_path=audio_path, tags=request.tags or request.genre,
                        request=request.to_dict(), seed=seed if isinstance(seed, int) else None,
                        duration_s=song.seconds, created_at=stamp.isoformat(timespec="seconds"),
                        sidecar_path=sidecar, timings=meta.get("timings") or {},
                        peaks=peaks_to_bytes(compute_peaks(song.audio)))
    return SavedSong(record)


def generation_work(provider: PipelineProvider, weights_dir: Path, request: SongRequest,
                    songs_dir: Path, fmt: str = "wav") -> Callable[[CancelToken], Iterator[object]]:
    def work(cancel: CancelToken) -> Iterator[object]:
        pipeline = provider.get(weights_dir)
        cancel.check()
        for event in pipeline.generate(request, cancel):
            if isinstance(event, Song):
                cancel.check()
                yield save_song(event, request, songs_dir, fmt)
            else:
                yield event

    return work
