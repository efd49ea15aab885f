"""Bounded HTTP for the remote client: the stdlib's urllib without proxies, a timeout on every
call, a size cap on every answer, and waits that a CancelToken ends at once."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from engine.errors import Cancelled, KhalaError
from engine.events import CancelToken

T = TypeVar("T")
JSON_LIMIT = 4 * 1024 * 1024
CHUNK = 64 * 1024
WAIT_SLICE_S = 0.05  # how soon a cancel is noticed


class ServerError(KhalaError):
    """The Khala server failed the job, stopped answering, or answered what we cannot read."""


class Unreachable(Exception):
    """No answer at all (refused, reset, timed out): ``reason`` says which, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


def describe(error: BaseException, timeout_s: float) -> str:
    """A few words for a failed connection."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (ConnectionResetError, http.client.RemoteDisconnected, ConnectionAbortedError)):
        return "the connection closed without an answer"
    if isinstance(error, http.client.IncompleteRead):
        return "the answer was cut off"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class Http:
    """Requests to ``base_url``; every socket operation is bounded by ``timeout_s``."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url, self.timeout_s = base_url, timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, body: Any = None, *, limit: int = JSON_LIMIT,
                cancel: CancelToken | None = None) -> Reply:
        """The answer, any status (Unreachable if none; ServerError if over ``limit`` bytes)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json, audio/wav"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                return Reply(resp.status, _read(resp, limit, path, cancel))
        except urllib.error.HTTPError as e:
            with e:
                return Reply(e.code, _read(e, JSON_LIMIT, path, cancel))
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise Unreachable(describe(e, self.timeout_s)) from None


def _read(resp: Any, limit: int, path: str, cancel: CancelToken | None) -> bytes:
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise ServerError(f"The Khala server's answer to {path} is {int(length):,} bytes, over the "
                          f"{limit:,}-byte limit.")
    parts, size = [], 0
    while True:
        if cancel is not None and cancel.cancelled:
            raise Cancelled()
        chunk = resp.read(CHUNK)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise ServerError(f"The Khala server's answer to {path} is over the {limit:,}-byte limit.")
        parts.append(chunk)


def call_cancellable(work: Callable[[], T], cancel: CancelToken, cancel_text: str) -> T:
    """``work()`` on a helper thread, so a cancel is noticed within WAIT_SLICE_S even while a call
    hangs (the call itself ends by its own timeout). Raises Cancelled(cancel_text) on cancel."""
    box: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append((True, work()))
        except BaseException as e:  # handed to the caller's thread
            box.append((False, e))
        done.set()

    threading.Thread(target=run, name="khala-remote-http", daemon=True).start()
    while not done.wait(WAIT_SLICE_S):
        if cancel.cancelled:
            raise Cancelled(cancel_text)
    ok, value = box[0]
    if ok:
        return value
    if isinstance(value, Cancelled):
        raise Cancelled(cancel_text)
    raise value


def sleep_cancellable(seconds: float, cancel: CancelToken, cancel_text: str) -> None:
    end = time.monotonic() + seconds
    while True:
        if cancel.cancelled:
            raise Cancelled(cancel_text)
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(WAIT_SLICE_S, left))
