"""Run a callback-reporting computation on a worker thread and stream its progress as events.

The model stages report progress through plain callbacks; the pipeline is a generator.
This bridges the two without threading code anywhere else.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

from engine.events import CancelToken, Progress

T = TypeVar("T")
_DONE = object()


class LinkedCancel(CancelToken):
    """Cancelled when its parent is, or when cancelled itself (e.g. the consumer walked away)."""

    def __init__(self, parent: CancelToken | None) -> None:
        super().__init__()
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        return super().cancelled or bool(self._parent and self._parent.cancelled)

    def check(self) -> None:
        if self._parent is not None:
            self._parent.check()
        super().check()


def stream(stage: str, work: Callable[[Callable[[int, int], None], CancelToken], T],
           cancel: CancelToken, result: list[T]) -> Iterator[Progress]:
    """Yield Progress events while ``work(report, cancel)`` runs; append its return value to ``result``.

    Exceptions raised by ``work`` are re-raised here, in the consumer's thread.
    """
    events: queue.Queue = queue.Queue()
    token = LinkedCancel(cancel)

    def report(done: int, total: int) -> None:
        events.put(Progress(stage, int(done), int(total)))

    def run() -> None:
        try:
            events.put((_DONE, work(report, token)))
        except BaseException as error:  # re-raised in the consumer thread
            events.put((_DONE, error))

    thread = threading.Thread(target=run, name=f"khala-{stage}", daemon=True)
    thread.start()
    try:
        while True:
            item = events.get()
            if isinstance(item, tuple) and item and item[0] is _DONE:
                outcome = item[1]
                if isinstance(outcome, BaseException):
                    raise outcome
                result.append(outcome)
                return
            latest = item
            while not events.empty():  # coalesce a burst of reports into the newest
                nxt = events.get()
                if isinstance(nxt, tuple) and nxt and nxt[0] is _DONE:
                    events.put(nxt)
                    break
                latest = nxt
            yield latest
    finally:
        token.cancel()
        thread.join()
