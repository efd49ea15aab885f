"""The one background-work helper: run a generator of events on one worker thread.

Events come back to the GUI thread as Qt signals (queued connections), so widgets are
only ever touched there. Cancelling sets a CancelToken; the generator (the engine)
checks it, and the helper also checks it between events."""

from __future__ import annotations

import logging
import traceback
from typing import Callable, Iterator

from PySide6.QtCore import QObject, QThread, Signal

from engine.errors import Cancelled, KhalaError
from engine.events import CancelToken

log = logging.getLogger(__name__)

WorkFn = Callable[[CancelToken], Iterator[object]]


def readable_error(exc: BaseException) -> str:
    """One line a person can read; the traceback goes to the log, never to a dialog."""
    if isinstance(exc, KhalaError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "Out of memory. Try a shorter song or close other apps."
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"A file could not be read or written{where}: {exc.strerror or exc}."
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"Something went wrong: {text[:300]}"


class _Thread(QThread):
    event = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: WorkFn, cancel: CancelToken) -> None:
        super().__init__()
        self._fn = fn
        self._cancel = cancel
        self.was_cancelled = False

    def run(self) -> None:
        try:
            for item in self._fn(self._cancel):
                self.event.emit(item)
                self._cancel.check()
        except Cancelled:
            self.was_cancelled = True
        except BaseException as exc:  # noqa: BLE001 - reported as a message, logged in full
            log.error("background job failed:\n%s", traceback.format_exc())
            if self._cancel.cancelled:
                self.was_cancelled = True
            else:
                self.failed.emit(readable_error(exc))


class Job(QObject):
    """``event(obj)`` per yielded item, ``failed(message)`` on error, ``cancelled()`` and
    always ``finished()`` last, all on the GUI thread."""

    event = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, fn: WorkFn, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.token = CancelToken()
        self.failed_message = ""
        self._thread = _Thread(fn, self.token)
        self._thread.event.connect(self.event)
        self._thread.failed.connect(self._on_failed)
        self._thread.finished.connect(self._on_thread_finished)
        self._running = False

    def start(self) -> "Job":
        self._running = True
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.token.cancel()

    @property
    def running(self) -> bool:
        return self._running

    def wait(self, ms: int = 30_000) -> bool:
        return self._thread.wait(ms)

    def _on_failed(self, message: str) -> None:
        self.failed_message = message
        self.failed.emit(message)

    def _on_thread_finished(self) -> None:
        self._running = False
        if self._thread.was_cancelled:
            self.cancelled.emit()
        self.finished.emit()
