"""The one event stream: what a song's stages, the weights download and a remote engine yield.

Every producer is a generator that yields these on the thread that runs it; consumers (the
CLI's progress bar, the app's job, the worker's /health) read the same types. Imports
neither torch nor Qt.

Stage names, in the order a local song passes them (``SONG_STAGES``)::

    load_backbone → backbone → load_superres → superres → load_decoder → decode

then ``write`` (the consumer puts the song on disk). The weights download uses
``download`` and ``verify``; a remote server adds ``queued`` before its own stages.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

import numpy as np

from engine.errors import Cancelled

LOAD_BACKBONE = "load_backbone"
BACKBONE = "backbone"
LOAD_SUPERRES = "load_superres"
SUPERRES = "superres"
LOAD_DECODER = "load_decoder"
DECODE = "decode"
WRITE = "write"
QUEUED = "queued"
DOWNLOAD = "download"
VERIFY = "verify"

SONG_STAGES = (LOAD_BACKBONE, BACKBONE, LOAD_SUPERRES, SUPERRES, LOAD_DECODER, DECODE)
MODEL_STAGES = (BACKBONE, SUPERRES, DECODE)
# What one unit of Progress.done counts in each stage.
UNITS = {BACKBONE: "token", SUPERRES: "pass", DECODE: "chunk", DOWNLOAD: "byte", VERIFY: "byte"}


@dataclass(frozen=True)
class Stage:
    """A stage starts. ``variation`` is the variation it works on, or None when it works on
    every variation of the request at once (the loads, and the batched backbone)."""

    name: str
    variation: int | None = None


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units (``UNITS[stage]``) of the current stage. The backbone's total
    is an estimate (a song may end earlier); the others are exact."""

    stage: str
    done: int
    total: int
    detail: str = ""


@dataclass(frozen=True)
class Log:
    """A line for the person: ``level`` is "info" or "warning"."""

    text: str
    level: str = "info"


@dataclass(frozen=True)
class Preview:
    """A rough decode of the song so far from the backbone's coarse codes (codebooks 0 and 1 only):
    float32 ``audio`` [2, frames · 2048] at ``sample_rate`` (44 100 Hz)."""

    audio: np.ndarray
    sample_rate: int
    frames: int
    variation: int = 0


@dataclass(frozen=True)
class DownloadProgress:
    """The weights download: bytes of this file and of the whole run, the rate over the last few
    seconds (bytes/s) and the time left (s, None until a rate is known)."""

    file: str
    file_bytes_done: int
    file_bytes_total: int
    bytes_done: int
    bytes_total: int
    rate_bytes_per_s: float
    eta_s: float | None
    phase: str = DOWNLOAD  # DOWNLOAD, VERIFY (hashing) or "copy"


@dataclass
class Song:
    """A finished song: float32 ``audio`` [2, n] at ``sample_rate``; ``codes`` int [64, frames]
    (None when a remote server made it); ``metadata`` is the sidecar's content (engine.song_file)."""

    audio: np.ndarray
    sample_rate: int
    codes: np.ndarray | None
    metadata: dict[str, Any] = field(default_factory=dict)
    variation: int = 0

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate


Event = Union[Stage, Progress, Log, Preview, DownloadProgress, Song]


class CancelToken:
    """Set from any thread; every stage checks it at least once per token, pass, chunk and block."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


class Outcome:
    """Iterate a stage generator's events; afterwards ``result`` holds what the stage returned::

        stage = Outcome(superres_passes(...))
        for event in stage:
            ...            # act on each event as it passes
        codes = stage.result
    """

    def __init__(self, stage: Iterator[Any]) -> None:
        self._stage = stage
        self.result: Any = None

    def __iter__(self) -> Iterator[Any]:
        self.result = yield from self._stage


def drain(stage: Iterator[Any], on_event: Callable[[Any], None] | None = None) -> Any:
    """Run a stage generator to its end and return its result (for tests, benchmarks and tools that
    do not stream); ``on_event`` sees each event it yields."""
    outcome = Outcome(stage)
    for event in outcome:
        if on_event is not None:
            on_event(event)
    return outcome.result
