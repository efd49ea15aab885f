from __future__ import annotations

import threading
import time

import pytest

from engine.errors import Cancelled
from engine.events import CancelToken, Progress
from engine.streaming import stream


def test_progress_events_and_result() -> None:
    def work(report, cancel):
        for i in range(1, 4):
            report(i, 3)
            time.sleep(0.01)
        return "done"
    out: list[str] = []
    events = list(stream("demo", work, CancelToken(), out))
    assert out == ["done"]
    assert events and all(isinstance(e, Progress) and e.stage == "demo" for e in events)
    assert events[-1].done == 3
    assert [e.done for e in events] == sorted(e.done for e in events)


def test_exceptions_reach_the_consumer() -> None:
    def work(report, cancel):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        list(stream("demo", work, CancelToken(), []))


def test_parent_cancel_stops_work() -> None:
    parent = CancelToken()

    def work(report, cancel):
        while True:
            cancel.check()
            report(1, 2)
            time.sleep(0.005)
    events = stream("demo", work, parent, [])
    next(events)
    parent.cancel()
    with pytest.raises(Cancelled):
        list(events)


def test_closing_the_stream_cancels_and_joins_the_worker() -> None:
    stopped = threading.Event()

    def work(report, cancel):
        try:
            while True:
                cancel.check()
                report(1, 2)
                time.sleep(0.005)
        finally:
            stopped.set()
    events = stream("demo", work, CancelToken(), [])
    next(events)
    events.close()
    assert stopped.is_set()
