"""RemotePipeline: the upstream Khala dispatcher as an engine, a drop-in for engine.pipeline.Pipeline.

``generate(request, cancel)`` yields the same events a local run does: Log warnings first (what
the server does differently), ``Stage(QUEUED)`` and a Log per queue position while the job
waits, then ``Stage``/``Progress`` for the song being made (the server's worker phases mapped
onto our stage names; ``Progress`` counts percent: ``done`` of ``total`` = 100, with the
server's phase text as ``detail``), and finally one ``Song`` per returned track, in track order:
float32 audio [2, n] decoded from the track's WAV, ``codes`` None, ``variation`` 0, 1, … in the
order returned, and ``metadata["engine"] = {"kind": "remote", "server", "job_id", "track"}``.

Every failure is one ServerError (a KhalaError) whose text is the whole message; no Song is
yielded unless every finished track's audio arrived and decoded. The client writes no files.
HTTP is the stdlib's urllib, without proxies; every call is bounded by ``timeout_s``.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
import soundfile as sf

import engine
from engine.errors import RequestError
from engine.events import MODEL_STAGES, QUEUED, CancelToken, Event, Log, Progress, Song, Stage
from engine.remote import protocol as P
from engine.remote.http import Http, Reply, ServerError, Unreachable, call_cancellable, sleep_cancellable
from engine.request import Continuation, SongRequest

T = TypeVar("T")
__all__ = ["RemotePipeline", "ServerError", "decode_wav", "normalise_server_url"]


def normalise_server_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; RequestError otherwise."""
    text = str(url).strip()
    if "://" not in text:
        text = "http://" + text
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
    except ValueError:  # "http://[::1": an unclosed or invalid IPv6 bracket
        hostname = None
    if not hostname or parts.scheme not in ("http", "https"):
        raise RequestError(f"A Khala server address looks like http://host:8888; got {shown!r}.")
    if parts.username or parts.password:
        raise RequestError("Put no user name or password in the server address: the Khala server "
                           "protocol has no authentication.")
    if parts.query or parts.fragment:
        raise RequestError(f"A Khala server address has no '?' or '#' part; got {shown!r}.")
    try:
        parts.port
    except ValueError:
        raise RequestError(f"The port in {shown!r} is not a number from 1 to 65535.") from None
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """float32 audio [2, n] (mono doubled) and its sample rate; ValueError for anything else."""
    try:
        frames, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"not readable audio ({str(e).split(':')[-1].strip() or type(e).__name__})") from None
    if frames.shape[0] == 0:
        raise ValueError("the audio is empty")
    if frames.shape[1] == 1:
        frames = np.repeat(frames, 2, axis=1)
    elif frames.shape[1] != 2:
        raise ValueError(f"expected stereo audio, got {frames.shape[1]} channels")
    audio = np.ascontiguousarray(frames.T, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise ValueError("the audio holds NaN or infinite samples")
    return audio, int(rate)


@dataclass
class _Track:
    status: str
    progress: int
    worker_phase: str
    phase_display: str
    error: str
    duration_sec: float
    worker_id: Any

    @property
    def stage(self) -> str:
        return P.STAGE_OF_PHASE.get(self.worker_phase) or P.STAGE_OF_TRACK_STATUS.get(self.status, QUEUED)


@dataclass
class _Watch:
    """What the client has seen of one job: what it already said, and since when nothing moved."""

    job_id: str
    num_tracks: int
    started: float
    queued_since: float | None = None
    position: Any = None
    shown: tuple[int, str] | None = None
    shown_progress: tuple[int, str] | None = None
    fingerprint: Any = None
    changed_at: float = 0.0
    status: str = ""
    tracks: list[_Track] = field(default_factory=list)
    cleaned_lyrics: str = ""
    stage_seen: list[dict[str, float]] = field(default_factory=list)
    finished_at: list[float | None] = field(default_factory=list)


class RemotePipeline:
    """The dispatcher at ``server_url`` as an engine (same ``generate`` as ``Pipeline``).

    Timing knobs, all in seconds: ``timeout_s`` bounds every HTTP call; ``poll_s`` is the wait
    between job polls; ``retry_s`` how long polls may fail to connect before giving up;
    ``stall_timeout_s`` how long a running job may show no change; ``queue_timeout_s`` how
    long a job may wait in the server's queue. ``max_wav_bytes`` bounds one track's download.
    """

    def __init__(self, server_url: str, *, timeout_s: float = 30.0, poll_s: float = 1.0,
                 retry_s: float = 30.0, stall_timeout_s: float = 900.0, queue_timeout_s: float = 3 * 3600.0,
                 max_wav_bytes: int = 512 * 1024 * 1024) -> None:
        self.server_url = normalise_server_url(server_url)
        self.timeout_s, self.poll_s, self.retry_s = timeout_s, poll_s, retry_s
        self.stall_timeout_s, self.queue_timeout_s = stall_timeout_s, queue_timeout_s
        self.max_wav_bytes = max_wav_bytes
        self._http = Http(self.server_url, timeout_s)

    def unload(self) -> None:
        """Nothing is loaded here (Pipeline's interface)."""

    # -- the run ---------------------------------------------------------------------------
    def generate(self, request: SongRequest, cancel: CancelToken | None = None, *,
                 continuation: Continuation | None = None, preview_every: float | None = None) -> Iterator[Event]:
        cancel = cancel or CancelToken()
        if continuation is not None:
            raise RequestError("A Khala server cannot continue or regenerate a song (its protocol takes no codes); "
                               "extend songs on this Mac.")
        for warning in P.check_server_request(request):
            yield Log(warning, "warning")
        if preview_every:
            yield Log("The Khala server sends no rough previews; the songs arrive when they are done.", "warning")
        cancel.check()
        yield from self._check_server(cancel)
        body = P.generate_body(request)
        watch = yield from self._submit(body, cancel)
        while True:
            job = self._poll(watch, cancel)
            yield from self._update(watch, job)
            if watch.status in P.JOB_FINISHED or all(t.status in ("done", "error") for t in watch.tracks):
                break
            self._check_stall(watch)
            self._sleep(self.poll_s, cancel, watch.job_id)
        yield from self._songs(watch, request, body, cancel)

    # -- steps -------------------------------------------------------------------------------
    def _check_server(self, cancel: CancelToken) -> Iterator[Event]:
        reply = self._get(P.STATUS_PATH, cancel, None, "GET /status")
        if reply.status == 404:
            raise ServerError(self._not_a_dispatcher(cancel))
        data = self._json(reply, "GET /status", P.STATUS_FIELDS[:1])
        total = data["total_gpus"]
        if isinstance(total, bool) or not isinstance(total, int):
            raise ServerError(f"The Khala server at {self.server_url} answered GET /status with a "
                              f"worker count that is not a number ({total!r:.40}).")
        if total == 0:
            raise ServerError(f"The Khala server at {self.server_url} has no workers: start it with at "
                              "least one (--num-workers).")
        workers = data.get("workers") if isinstance(data.get("workers"), list) else []
        online = [w for w in workers if isinstance(w, dict) and w.get("status") != "offline"]
        yield Log(f"Khala server at {self.server_url}: {data.get('idle_gpus', '?')} of {total} workers idle, "
                  f"{data.get('queued_jobs', 0)} job(s) waiting.")
        if workers and not online:
            yield Log(f"None of the server's {len(workers)} workers answers right now: the job waits in "
                      "its queue until one does.", "warning")

    def _not_a_dispatcher(self, cancel: CancelToken) -> str:
        try:
            health = json.loads(self._get(P.HEALTH_PATH, cancel, None, "GET /health").body)
        except (ServerError, ValueError, RecursionError):
            health = None
        if isinstance(health, dict) and {"status", "phase"} <= set(health):
            return (f"{self.server_url} is a Khala worker, not the dispatcher: use the dispatcher's address "
                    f"(backend_api.py, port {P.DEFAULT_DISPATCHER_PORT} unless changed).")
        return f"{self.server_url} does not look like a Khala server (GET /status answered 404)."

    def _submit(self, body: dict[str, Any], cancel: CancelToken) -> Iterator[Event]:
        started = time.monotonic()
        reply = self._call(lambda: self._http.request("POST", P.GENERATE_PATH, body), cancel,
                           "Cancelled. The request may have reached the Khala server, which has no "
                           "cancel and would then make the songs anyway.",
                           lambda reason: f"Cannot reach the Khala server at {self.server_url}: {reason}.")
        if reply.status == 422:
            raise ServerError(f"The Khala server refused the request: {self._detail(reply.body)}")
        data = self._json(reply, "POST /generate", ("job_id",))
        job_id, num_tracks = data.get("job_id"), data.get("num_tracks", P.TRACKS_PER_JOB)
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 200:
            raise ServerError(f"The Khala server answered POST /generate without a usable job id "
                              f"({job_id!r:.60}).")
        if isinstance(num_tracks, bool) or not isinstance(num_tracks, int) or not 1 <= num_tracks <= 16:
            raise ServerError(f"The Khala server announced {num_tracks!r:.40} songs for job {job_id}; "
                              "expected a number from 1 to 16.")
        if data.get("status") not in P.ACCEPT_STATUSES:
            raise ServerError(f"The Khala server answered POST /generate with status "
                              f"{str(data.get('status'))[:40]!r}, not one of {', '.join(P.ACCEPT_STATUSES)}.")
        yield Log(f"Job {job_id} is on the server ({num_tracks} songs).")
        now = time.monotonic()
        return _Watch(job_id, num_tracks, started, changed_at=now,
                      stage_seen=[{} for _ in range(num_tracks)], finished_at=[None] * num_tracks)

    def _poll(self, watch: _Watch, cancel: CancelToken) -> dict[str, Any]:
        path = P.JOB_PATH.format(job_id=quote(watch.job_id, safe=""))
        failing_since: float | None = None
        while True:
            try:
                reply = self._call(lambda: self._http.request("GET", path), cancel, self._cancel_text(watch.job_id))
                if reply.status not in (502, 503, 504):
                    break
                reason = f"HTTP {reply.status} from a proxy in front of it"
            except Unreachable as e:
                reason = e.reason
            now = time.monotonic()
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since >= self.retry_s:
                raise ServerError(f"The Khala server at {self.server_url} stopped answering while job "
                                  f"{watch.job_id} was running ({reason}); gave up after {self.retry_s:g} s. "
                                  "The job may still finish there.")
            self._sleep(min(self.poll_s, self.retry_s), cancel, watch.job_id)
        if reply.status == 404:
            raise ServerError(f"Job {watch.job_id} is gone from the Khala server at {self.server_url}: it "
                              f"expired (the server keeps jobs {P.JOB_TTL_S // 60} min) or the server restarted.")
        return self._json(reply, f"GET /job/{watch.job_id}", ("status", "tracks"))

    def _update(self, watch: _Watch, job: dict[str, Any]) -> Iterator[Event]:
        now = time.monotonic()
        what = f"GET /job/{watch.job_id}"
        if job["status"] not in P.JOB_STATUSES:
            raise ServerError(f"The Khala server answered {what} with an unknown job status "
                              f"{str(job['status'])[:40]!r}.")
        raw = job["tracks"]
        if not isinstance(raw, list) or len(raw) != watch.num_tracks:
            raise ServerError(f"The Khala server answered {what} with {len(raw) if isinstance(raw, list) else 'no'} "
                              f"track(s); it announced {watch.num_tracks}.")
        watch.status, watch.tracks = job["status"], [self._track(t, what) for t in raw]
        if isinstance(job.get("cleaned_lyrics"), str):
            watch.cleaned_lyrics = job["cleaned_lyrics"]
        if watch.status == "queued":
            if watch.queued_since is None:
                watch.queued_since = now
                yield Stage(QUEUED)
            position = job.get("queue_position")
            if position != watch.position:
                watch.position = position
                if isinstance(position, int) and position > 0:
                    yield Log(f"Waiting in the Khala server's queue: position {position}.")
        for i, track in enumerate(watch.tracks):
            if track.status not in ("done", "error"):
                watch.stage_seen[i].setdefault(track.stage, now)
            elif watch.finished_at[i] is None:
                watch.finished_at[i] = now
                if track.status == "done":
                    yield Log(f"Song {i + 1} of {watch.num_tracks} is done on the server.")
        yield from self._focus_events(watch)
        fingerprint = (watch.status, watch.position,
                       tuple((t.status, t.progress, t.worker_phase) for t in watch.tracks))
        if fingerprint != watch.fingerprint:
            watch.fingerprint, watch.changed_at = fingerprint, now

    @staticmethod
    def _focus_events(watch: _Watch) -> Iterator[Event]:
        """Stage/Progress of the first song not finished (the server may make both at once)."""
        if watch.status == "queued":
            return
        focus = next((i for i, t in enumerate(watch.tracks) if t.status not in ("done", "error")), None)
        if focus is None:
            return
        track = watch.tracks[focus]
        if (focus, track.stage) != watch.shown:
            watch.shown, watch.shown_progress = (focus, track.stage), None
            yield Stage(track.stage, focus)
        if track.stage in MODEL_STAGES and (track.progress, track.phase_display) != watch.shown_progress:
            watch.shown_progress = (track.progress, track.phase_display)
            yield Progress(track.stage, track.progress, 100, track.phase_display)

    def _track(self, raw: Any, what: str) -> _Track:
        if not isinstance(raw, dict) or raw.get("status") not in P.TRACK_STATUSES:
            status = raw.get("status") if isinstance(raw, dict) else raw
            raise ServerError(f"The Khala server answered {what} with a track of unknown status "
                              f"{str(status)[:40]!r}.")
        progress = raw.get("progress", 0)
        progress = 0 if isinstance(progress, bool) or not isinstance(progress, (int, float)) else progress
        duration = raw.get("duration_sec", 0)
        return _Track(status=raw["status"], progress=int(max(0, min(100, progress))),
                      worker_phase=str(raw.get("worker_phase") or ""),
                      phase_display=str(raw.get("phase_display") or "")[:200],
                      error=str(raw.get("error") or ""),
                      duration_sec=float(duration) if isinstance(duration, (int, float)) else 0.0,
                      worker_id=raw.get("worker_id"))

    def _check_stall(self, watch: _Watch) -> None:
        now = time.monotonic()
        if watch.status == "queued" and watch.queued_since is not None:
            if now - watch.queued_since > self.queue_timeout_s:
                raise ServerError(f"Job {watch.job_id} waited {_span(now - watch.queued_since)} in the Khala "
                                  "server's queue without starting; gave up (it stays queued there).")
        elif now - watch.changed_at > self.stall_timeout_s:
            raise ServerError(f"No progress on job {watch.job_id} for {_span(now - watch.changed_at)}: the Khala "
                              "server answers, but its worker reports nothing new (it may have hung). Gave up.")

    def _songs(self, watch: _Watch, request: SongRequest, body: dict[str, Any],
               cancel: CancelToken) -> Iterator[Event]:
        received: list[tuple[int, np.ndarray, int, float]] = []
        failures: list[str] = []
        for i, track in enumerate(watch.tracks):
            if track.status == "error":
                failures.append(f"song {i + 1}: {P.short_server_error(track.error)}")
                continue
            path = P.TRACK_WAV_PATH.format(job_id=quote(watch.job_id, safe=""), index=i)
            start = time.monotonic()
            reply = self._call(lambda: self._http.request("GET", path, limit=self.max_wav_bytes, cancel=cancel), cancel,
                               self._cancel_text(watch.job_id),
                               lambda reason: f"The Khala server at {self.server_url} stopped answering while "
                                              f"sending song {i + 1} of job {watch.job_id} ({reason}).")
            if reply.status == 404:
                failures.append(f"song {i + 1}: the server has no audio for it (its worker's file could not "
                                "be fetched)")
                continue
            if reply.status != 200:
                raise ServerError(f"The Khala server answered GET {path} with HTTP {reply.status}.")
            try:
                audio, rate = decode_wav(reply.body)
            except ValueError as e:
                failures.append(f"song {i + 1}: its WAV is {e}")
                continue
            received.append((i, audio, rate, time.monotonic() - start))
        if not received:
            raise ServerError(f"The Khala server could not make the songs of job {watch.job_id}: "
                              + "; ".join(failures) + ".")
        if failures:
            yield Log(f"The Khala server made {len(received)} of {watch.num_tracks} songs; "
                      + "; ".join(failures) + ".", "warning")
        for variation, (i, audio, rate, fetch_s) in enumerate(received):
            yield Song(audio=audio, sample_rate=rate, codes=None, variation=variation,
                       metadata=self._metadata(watch, i, variation, request, body, audio, rate, fetch_s))

    def _metadata(self, watch: _Watch, i: int, variation: int, request: SongRequest, body: dict[str, Any],
                  audio: np.ndarray, rate: int, fetch_s: float) -> dict[str, Any]:
        track = watch.tracks[i]
        return {
            "request": request.to_dict(),
            "seed": None,
            "variation": variation,
            "engine": {"kind": "remote", "server": self.server_url, "job_id": watch.job_id, "track": i},
            "server": {"sent": body, "cleaned_lyrics": watch.cleaned_lyrics, "worker_id": track.worker_id,
                       "duration_sec": track.duration_sec,
                       "protocol": f"{P.UPSTREAM_REPO}@{P.UPSTREAM_COMMIT[:7]}"},
            "timings_s": self._timings(watch, i, fetch_s),
            "seconds": round(audio.shape[-1] / rate, 3),
            "sample_rate": rate,
            "versions": {"khala": engine.__version__},
        }

    def _timings(self, watch: _Watch, i: int, fetch_s: float) -> dict[str, float]:
        """Stage times as seen by polling (each ± ``poll_s``; "queued" is the wait before this
        song started), and its download."""
        seen = sorted(watch.stage_seen[i].items(), key=lambda kv: kv[1])
        end = watch.finished_at[i] or time.monotonic()
        out = {stage: round(nxt - at, 3) for (stage, at), (_, nxt) in zip(seen, [*seen[1:], ("", end)])}
        out["download"] = round(fetch_s, 3)
        return out

    # -- HTTP ----------------------------------------------------------------------------------
    def _get(self, path: str, cancel: CancelToken, job_id: str | None, what: str) -> Reply:
        return self._call(lambda: self._http.request("GET", path), cancel,
                          self._cancel_text(job_id) if job_id else "Cancelled.",
                          lambda reason: f"Cannot reach the Khala server at {self.server_url}: {reason}.")

    def _call(self, work: Callable[[], T], cancel: CancelToken, cancel_text: str,
              unreachable: Callable[[str], str] | None = None) -> T:
        """``work()`` abandoned at once on cancel; no answer at all becomes ``unreachable(reason)``."""
        try:
            return call_cancellable(work, cancel, cancel_text)
        except Unreachable as e:
            if unreachable is None:
                raise
            raise ServerError(unreachable(e.reason)) from None

    def _json(self, reply: Reply, what: str, required: tuple[str, ...]) -> dict[str, Any]:
        if reply.status != 200:
            raise ServerError(f"The Khala server at {self.server_url} answered {what} with HTTP {reply.status}"
                              f"{': ' + self._detail(reply.body) if reply.body else '.'}")
        try:
            data = json.loads(reply.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: deep nesting
            raise ServerError(f"The Khala server at {self.server_url} answered {what} with something that is "
                              f"not JSON: {reply.body[:60]!r}.") from None
        missing = [name for name in required if not isinstance(data, dict) or name not in data]
        if missing:
            raise ServerError(f"The Khala server at {self.server_url} answered {what} without "
                              f"{', '.join(missing)}: is this a Khala server?")
        return data

    @staticmethod
    def _detail(body: bytes) -> str:
        """The message in an error body (FastAPI's ``detail`` or upstream's ``error``), one line."""
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: deep nesting
            return P.short_server_error(body[:200].decode("utf-8", "replace"))
        if isinstance(data, dict):
            detail = data.get("error") or data.get("detail")
            if isinstance(detail, list) and detail and isinstance(detail[0], dict):
                loc = ".".join(str(x) for x in detail[0].get("loc", []) if x != "body")
                return P.short_server_error(f"{loc}: {detail[0].get('msg', '')}")
            if detail:
                return P.short_server_error(detail)
        return P.short_server_error(json.dumps(data)[:200])

    def _cancel_text(self, job_id: str | None) -> str:
        return (f"Cancelled: stopped waiting for job {job_id}. The Khala server has no cancel and keeps "
                "making its songs.")

    def _sleep(self, seconds: float, cancel: CancelToken, job_id: str) -> None:
        sleep_cancellable(seconds, cancel, self._cancel_text(job_id))


def _span(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{int(round(seconds))} s" if seconds < 120 else f"{int(seconds) // 60} min"
