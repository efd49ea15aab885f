"""In-app playback through sounddevice: a callback-driven OutputStream, never blocking the GUI."""

from __future__ import annotations

import threading
from pathlib import Path
from types import ModuleType

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal


def _sounddevice() -> ModuleType:
    import sounddevice  # PortAudio is initialised on import; keep it out of app start-up

    return sounddevice


NO_DEVICE = "No audio output device found. Connect speakers or headphones, then press Play again."


def _play_problem(sd: ModuleType | None, error: Exception) -> str:
    """One line for a stream that would not open, in our words rather than PortAudio's
    ("Error querying device -1" is what it says when there is no output device)."""
    if sd is None:
        return "Audio playback is unavailable: the PortAudio library could not be loaded."
    try:
        sd.query_devices(kind="output")  # raises when there is no default output device
        has_output = any(d["max_output_channels"] > 0 for d in sd.query_devices())
    except Exception:  # noqa: BLE001 - PortAudioError, or a broken host API
        has_output = False
    if not has_output:
        return NO_DEVICE
    reason = " ".join(str(error).split())[:120] or type(error).__name__
    return f"The audio output device would not play this song ({reason})."


def read_audio_file(path: Path) -> tuple[np.ndarray, int]:
    """Frames [n, channels] float32 and the sample rate."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data), int(rate)


class Player(QObject):
    """play / pause / seek / position over one song at a time.

    A growing rough preview plays through ``load_live`` / ``extend_live`` / ``end_live``: the
    audio is swapped for a longer view of the engine's buffer (no copy; position and playback
    go on), and at the end of what has arrived the stream plays silence and waits for more
    until ``end_live``. ``live_key`` names what is playing live (None otherwise).

    When a song cannot be played (no output device, say) ``error`` says why in one line,
    ``play_failed`` carries the song id (-1 for none), and the player lets go of the song:
    ``song_id`` becomes None and ``position_changed`` fires, so a now-playing marker that
    follows ``song_id`` leaves it."""

    state_changed = Signal(bool)
    position_changed = Signal(float)
    finished = Signal()
    error = Signal(str)
    loaded = Signal(int)
    play_failed = Signal(int)
    duration_changed = Signal(float)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._frames = np.zeros((0, 2), dtype=np.float32)
        self._rate = 44_100
        self._pos = 0
        self._lock = threading.Lock()
        self._stream = None
        self.song_id: int | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(lambda: self.position_changed.emit(self.position))
        self._ended = False
        self._live = False
        self.live_key: object | None = None
        self.finished.connect(self.on_finished_gui)

    @property
    def playing(self) -> bool:
        return self._stream is not None and bool(self._stream.active)

    @property
    def duration(self) -> float:
        return len(self._frames) / self._rate if self._rate else 0.0

    @property
    def position(self) -> float:
        return self._pos / self._rate if self._rate else 0.0

    def load_file(self, path: Path, song_id: int | None = None) -> bool:
        try:
            frames, rate = read_audio_file(path)
        except Exception as exc:  # noqa: BLE001 - unreadable or missing file
            if not Path(path).is_file():
                self.error.emit(f"Cannot play {Path(path).name}: the file is missing (moved, renamed or deleted "
                                f"outside Khala?).")
            else:
                reason = (str(exc).splitlines() or [type(exc).__name__])[0].replace(str(path), Path(path).name)
                self.error.emit(f"Cannot play {Path(path).name}: {reason[:200]}")
            return False
        self.load_array(frames, rate, song_id)
        return True

    def load_array(self, frames: np.ndarray, rate: int, song_id: int | None = None) -> None:
        self.stop()
        with self._lock:
            self._frames = np.ascontiguousarray(frames, dtype=np.float32)
            self._rate = int(rate)
            self._pos = 0
            self._live, self.live_key = False, None
        self.song_id = song_id
        self.loaded.emit(song_id if song_id is not None else -1)
        self.duration_changed.emit(self.duration)
        self.position_changed.emit(0.0)

    def load_live(self, frames: np.ndarray, rate: int, key: object) -> None:
        """Start following a growing preview: ``frames`` [n, channels] float32 (a view is kept, not copied)."""
        self.load_array(frames, rate)
        self._live, self.live_key = True, key

    def extend_live(self, frames: np.ndarray) -> None:
        """The preview grew: ``frames`` holds what played so far and more. Cheap (a reference swap)."""
        if not self._live:
            return
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        with self._lock:
            self._frames = frames
            self._pos = min(self._pos, len(frames))
        self.duration_changed.emit(self.duration)

    def end_live(self) -> None:
        """The preview will not grow: playback ends at its end, as for a song."""
        self._live = False

    @property
    def live(self) -> bool:
        return self._live

    def play(self) -> None:
        if self.playing or len(self._frames) == 0:
            return
        if self._pos >= len(self._frames):
            self._pos = 0
        sd = None
        try:
            sd = _sounddevice()
            self._stream = sd.OutputStream(
                samplerate=self._rate, channels=self._frames.shape[1], dtype="float32",
                callback=self._callback, finished_callback=self._on_stream_finished)
            self._ended = False
            self._stream.start()
        except Exception as exc:  # noqa: BLE001 - no device, no PortAudio
            self._failed(_play_problem(sd, exc))
            return
        self._timer.start()
        self.state_changed.emit(True)

    def _failed(self, message: str) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - it never opened properly
                pass
        failed_id, self.song_id = self.song_id, None
        self.error.emit(message)
        self.play_failed.emit(failed_id if failed_id is not None else -1)
        self.position_changed.emit(self.position)
        self.state_changed.emit(False)

    def pause(self) -> None:
        stream, self._stream = self._stream, None
        self._timer.stop()
        if stream is not None:
            stream.stop()
            stream.close()
            self.position_changed.emit(self.position)
            self.state_changed.emit(False)

    def stop(self) -> None:
        self.pause()
        self._pos = 0

    def toggle(self) -> None:
        self.pause() if self.playing else self.play()

    def seek(self, seconds: float) -> None:
        with self._lock:
            self._pos = int(max(0.0, min(seconds * self._rate, len(self._frames))))
        self.position_changed.emit(self.position)

    def _callback(self, outdata: np.ndarray, frames: int, _time, _status) -> None:
        with self._lock:
            chunk = self._frames[self._pos:self._pos + frames]
            self._pos += len(chunk)
        outdata[:len(chunk)] = chunk
        if len(chunk) < frames:
            outdata[len(chunk):] = 0
            if self._live:
                return  # a growing preview: silence until more arrives
            self._ended = True
            raise _sounddevice().CallbackStop

    def _on_stream_finished(self) -> None:
        if self._ended:
            # PortAudio thread: signals are queued to the GUI thread
            self.finished.emit()

    def on_finished_gui(self) -> None:
        """Connected to ``finished``: release the stream on the GUI thread."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
        self._timer.stop()
        self.position_changed.emit(self.position)
        self.state_changed.emit(False)
