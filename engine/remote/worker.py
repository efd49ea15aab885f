"""Our engine as a worker of the upstream Khala dispatcher (``khala worker``), over plain HTTP.

Endpoints, as the dispatcher calls them (protocol.py has the field names and their source):

* ``GET /health`` → ``{status, phase, gpu_id, seed, progress, progress_detail, …}``. The
  dispatcher gives work only to a worker that says "idle"; our Stage/Progress events drive
  ``phase`` (loading_backbone … decoding) and ``progress`` (0..99).
* ``POST /generate`` with the dispatcher's payload → ``{status: "ok", wav_filename,
  mp3_filename, duration_sec, …}`` or ``{status: "error", error}``; ``{status: "busy"}`` while
  a song is being made (upstream's answer). The answer's headers go out at once and a space
  every ``keepalive_s`` until the JSON (leading whitespace is valid JSON): the dispatcher
  reads with a 600 s timeout per read, and a Mac may take longer than that for a song. If the
  dispatcher hangs up, the song is cancelled.
* ``GET /download/{file}`` serves only files this worker wrote, by exact name from its own
  list, opened without following links; each is deleted once fetched as often as the answer
  named it, or ``file_ttl_s`` after it was written, and the whole private folder on exit.

Loopback by default: the protocol has no authentication.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Protocol, TextIO
from urllib.parse import unquote, urlsplit

import engine
from engine.errors import Cancelled, KhalaError, OutputError, RequestError
from engine.events import BACKBONE, DECODE, SUPERRES, CancelToken, Event, Log, Progress, Song, Stage
from engine.remote import protocol as P
from engine.request import UPSTREAM_TOKEN_CAP, SongRequest

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_KEEPALIVE_S = 10.0
DEFAULT_FILE_TTL_S = 900.0
GPU_ID = 0  # one device per worker; upstream reports its CUDA device index
_DETAIL = {BACKBONE: P.BACKBONE_DETAIL, SUPERRES: P.SUPERRES_DETAIL, DECODE: "{done}/{total} chunks"}


class SongPipeline(Protocol):
    def generate(self, request: SongRequest, cancel: CancelToken | None = None) -> Iterator[Event]: ...


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_seed() -> int:
    """A fresh positive base seed (the dispatcher sends seed_override = this + track index)."""
    return random.SystemRandom().randrange(1, 2**31)


class WorkerState:
    """What /health reports, driven by the pipeline's events. Thread-safe."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self.status, self.phase, self.progress, self.detail, self.seed = P.WORKER_IDLE, P.PHASE_IDLE, 0, "", seed

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"status": self.status, "phase": self.phase, "gpu_id": GPU_ID, "seed": self.seed,
                    "progress": self.progress, "progress_detail": self.detail}

    def claim(self) -> bool:
        """idle → busy (phase loading_backbone, as upstream's first step); False if already busy."""
        with self._lock:
            if self.status == P.WORKER_BUSY:
                return False
            self.status, self.phase, self.progress, self.detail = P.WORKER_BUSY, "loading_backbone", 0, ""
            return True

    def release(self) -> None:
        with self._lock:
            self.status, self.phase, self.progress, self.detail = P.WORKER_IDLE, P.PHASE_IDLE, 0, ""
            self.seed = new_seed()

    def on_event(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, Stage) and event.name in P.PHASE_OF_STAGE:
                self.phase, self.progress = P.PHASE_OF_STAGE[event.name], 0
                self.detail = P.DECODE_DETAIL if event.name == DECODE else ""
            elif isinstance(event, Progress) and event.stage in _DETAIL and event.total > 0:
                self.progress = max(0, min(99, event.done * 100 // event.total))
                self.detail = _DETAIL[event.stage].format(done=event.done, total=event.total)


@dataclass
class _Entry:
    path: Path
    downloads_left: int
    expires_at: float


class FileStore:
    """The files this worker wrote, in a private folder (mode 0700), by exact name."""

    def __init__(self, ttl_s: float = DEFAULT_FILE_TTL_S) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="khala-worker-"))
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._files: dict[str, _Entry] = {}

    def new_stem(self) -> str:
        return f"{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(4)}"

    def add(self, name: str, downloads: int = 1) -> None:
        with self._lock:
            self._files[name] = _Entry(self.dir / name, downloads, time.monotonic() + self.ttl_s)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._files)

    def open(self, name: str) -> tuple[BinaryIO, int] | None:
        """The file and its size if ``name`` is one of ours and still a plain file; else None."""
        self.sweep()
        with self._lock:
            entry = self._files.get(name)
        if entry is None:
            return None
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb"), info.st_size

    def served(self, name: str) -> None:
        with self._lock:
            entry = self._files.get(name)
            if entry is not None:
                entry.downloads_left -= 1
                if entry.downloads_left <= 0:
                    self._drop(name)

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            for name in [n for n, e in self._files.items() if e.expires_at <= now]:
                self._drop(name)

    def _drop(self, name: str) -> None:
        entry = self._files.pop(name)
        entry.path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._files.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class _Job:
    request: SongRequest
    cancel: CancelToken = field(default_factory=CancelToken)
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] = field(default_factory=dict)


def _check_max_tokens(max_tokens: int | None) -> None:
    """The operator's cap, checked at start: every song's request must pass SongRequest.validate."""
    if max_tokens is not None and not 2 <= max_tokens <= UPSTREAM_TOKEN_CAP:
        raise RequestError(f"--max-tokens must be from 2 to {UPSTREAM_TOKEN_CAP:,}; got {max_tokens}.")


class Worker:
    """One song at a time through ``pipeline``; the HTTP layer is ``make_server``."""

    def __init__(self, pipeline: SongPipeline, *, max_tokens: int | None = None, files: FileStore | None = None,
                 keepalive_s: float = DEFAULT_KEEPALIVE_S, log: TextIO | None = None) -> None:
        _check_max_tokens(max_tokens)
        self.pipeline = pipeline
        self.max_tokens = max_tokens
        self.files = files or FileStore()
        self.keepalive_s = keepalive_s
        self.state = WorkerState(new_seed())
        self._log = log if log is not None else sys.stderr
        self._job: _Job | None = None

    def health(self) -> dict[str, Any]:
        self.files.sweep()
        device = getattr(self.pipeline, "device", None)
        return {**self.state.snapshot(), "engine": "khala-mac", "version": engine.__version__,
                "device": str(device) if device is not None else None, "max_tokens": self.max_tokens}

    def start(self, payload: Any) -> _Job | dict[str, Any]:
        """A running job, or the answer to send at once (busy, or a payload we cannot honour)."""
        if self.state.status == P.WORKER_BUSY:
            return dict(P.BUSY_ANSWER)
        try:
            request = P.request_from_worker_payload(payload, worker_seed=self.state.seed, max_tokens=self.max_tokens)
        except RequestError as e:
            return {"status": P.RESULT_ERROR, "error": str(e)}
        if not self.state.claim():
            return dict(P.BUSY_ANSWER)
        job = self._job = _Job(request)
        threading.Thread(target=self._run, args=(job,), name="khala-worker-job", daemon=True).start()
        return job

    def cancel(self) -> None:
        job = self._job
        if job is not None:
            job.cancel.cancel()
            job.done.wait(30)

    def _say(self, text: str) -> None:
        print(f"[khala worker] {text}", file=self._log, flush=True)

    def _run(self, job: _Job) -> None:
        started = time.perf_counter()
        r = job.request
        self._say(f"song: {r.minutes} min, seed {r.seed}, top-k {r.top_k}, temperature {r.temperature:g}")
        try:
            song, notes = None, []
            for event in self.pipeline.generate(r, job.cancel):
                self.state.on_event(event)
                if isinstance(event, Log):
                    notes.append(event.text)
                    self._say(event.text)
                elif isinstance(event, Song) and song is None:
                    song = event
            if song is None:
                raise KhalaError("The pipeline finished without a song.")
            answer = self._write(song, notes)
            self._say(f"done: {answer['duration_sec']} s of audio in {time.perf_counter() - started:.1f} s "
                      f"→ {answer['wav_filename']}")
        except Cancelled:
            answer = {"status": P.RESULT_ERROR, "error": "Cancelled: the dispatcher hung up."}
            self._say("cancelled")
        except KhalaError as e:
            answer = {"status": P.RESULT_ERROR, "error": str(e)}
            self._say(f"error: {e}")
        except Exception as e:  # an engine bug: the dispatcher gets one line, the log the traceback
            traceback.print_exc(file=self._log)
            answer = {"status": P.RESULT_ERROR, "error": f"Internal error: {type(e).__name__}: {str(e)[:200]}"}
        finally:
            self.state.release()
        job.answer = answer
        job.done.set()

    def _write(self, song: Song, notes: list[str]) -> dict[str, Any]:
        from engine.audio import write_audio  # numpy + soundfile

        stem = self.files.new_stem()
        wav, mp3 = f"{stem}.wav", f"{stem}.mp3"
        write_audio(self.files.dir / wav, song.audio, song.sample_rate)
        try:
            write_audio(self.files.dir / mp3, song.audio, song.sample_rate)
        except OutputError as e:  # upstream's fallback: the WAV stands in for the MP3
            self._say(f"no MP3 ({e}); the WAV stands in")
            mp3 = wav
        self.files.add(wav, downloads=2 if mp3 == wav else 1)
        if mp3 != wav:
            self.files.add(mp3)
        meta = song.metadata or {}
        return {"status": P.RESULT_OK, "mp3_filename": mp3, "wav_filename": wav,
                "duration_sec": round(song.seconds, 1),
                "backbone_tokens": (meta.get("tokens") or {}).get("generated"),
                "gpu_id": GPU_ID, "seed": meta.get("seed"), "sample_rate": song.sample_rate,
                "engine": f"khala-mac {engine.__version__}", "warnings": notes,
                "timings_s": meta.get("timings_s", {})}


class _Handler(BaseHTTPRequestHandler):
    worker: Worker
    server_version = f"khala-worker/{engine.__version__}"
    protocol_version = "HTTP/1.0"  # one request per connection; a streamed answer ends at close

    def log_message(self, format: str, *args: Any) -> None:  # the dispatcher polls /health every second
        pass

    def _send_json(self, code: int, data: dict[str, Any]) -> None:
        body = json.dumps(data, ensure_ascii=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == P.HEALTH_PATH:
            self._send_json(200, self.worker.health())
        elif path.startswith("/download/"):
            self._download(unquote(path[len("/download/"):]))
        else:
            self._send_json(404, {"status": P.RESULT_ERROR, "error": "Not found."})

    def _download(self, name: str) -> None:
        opened = self.worker.files.open(name)
        if opened is None:
            self._send_json(404, {"status": P.RESULT_ERROR, "error": "No such file on this worker."})
            return
        handle, size = opened
        self.worker.files.served(name)  # counted (and maybe unlinked) now; the open handle still reads it
        with handle:
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg" if name.endswith(".mp3") else "audio/wav")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            shutil.copyfileobj(handle, self.wfile, 1024 * 1024)

    def do_POST(self) -> None:
        if urlsplit(self.path).path != P.GENERATE_PATH:
            self._send_json(404, {"status": P.RESULT_ERROR, "error": "Not found."})
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self._send_json(413 if length.isdigit() else 411,
                            {"status": P.RESULT_ERROR, "error": f"Send a JSON body of at most {MAX_BODY_BYTES} bytes."})
            return
        try:
            payload = json.loads(self.rfile.read(int(length)).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: deeply nested arrays
            self._send_json(400, {"status": P.RESULT_ERROR, "error": "The body is not JSON."})
            return
        started = self.worker.start(payload)
        if isinstance(started, dict):
            self._send_json(200, started)
            return
        self._stream_answer(started)

    def _stream_answer(self, job: _Job) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.flush()
            while not job.done.wait(self.worker.keepalive_s):
                self.wfile.write(b" ")
                self.wfile.flush()
        except OSError:  # the dispatcher hung up: stop the song, free the worker
            job.cancel.cancel()
            return
        self.wfile.write(json.dumps(job.answer, ensure_ascii=False).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


def make_server(worker: Worker, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Bind (OSError if the address is taken); ``serve_forever`` runs it."""
    handler = type("WorkerHandler", (_Handler,), {"worker": worker})
    server_class = _Server
    if ":" in host:
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    return server_class((host.strip("[]"), port), handler)


def serve(weights_dir: Path, *, host: str, port: int, max_tokens: int | None, device: str | None,
          dtype: str | None, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
          pipeline_factory: Callable[..., SongPipeline] | None = None) -> int:
    """``khala worker``: check everything, bind, serve until Ctrl-C or SIGTERM; 0 on a clean stop."""
    if not 0 <= port <= 65535:
        raise RequestError(f"--port must be from 0 to 65535; got {port}.")
    _check_max_tokens(max_tokens)
    from engine.weights.folder import locate_weights
    locate_weights(weights_dir)  # WeightsError naming the missing or broken file, before binding
    if pipeline_factory is None:
        from engine.pipeline import Pipeline as pipeline_factory  # torch
    pipeline = pipeline_factory(weights_dir, device=device, dtype=dtype)
    worker = Worker(pipeline, max_tokens=max_tokens, log=err)
    try:
        server = make_server(worker, host, port)
    except OSError as e:
        worker.files.close()
        raise KhalaError(f"Cannot listen on {host}:{port}: {e.strerror or e}.") from None
    bound_port = server.server_address[1]
    if not is_loopback(host):
        print(f"warning: listening on {host}:{bound_port}, reachable from other machines. The Khala worker "
              "protocol has no authentication: anyone who can reach this port can make songs with this "
              "machine and fetch them. Use it on a trusted network only.", file=err, flush=True)
    device_text = getattr(pipeline, "device", device or "auto")
    print(f"khala worker: listening on http://{host}:{bound_port} (weights {weights_dir}, device {device_text}, "
          f"max tokens {max_tokens or 'upstream cap'})", file=out, flush=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        worker.cancel()
        server.server_close()
        worker.files.close()
        print("khala worker: stopped", file=out, flush=True)
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
