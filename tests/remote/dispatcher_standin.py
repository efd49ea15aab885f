"""A stand-in for the upstream Khala dispatcher (backend/backend_api.py) on 127.0.0.1.

Written from the dispatcher's public description (SPEC §11), not from engine.remote.protocol;
test_remote_contract.py ties the two together. Two modes:

* scripted (no workers): each GET /job/{id} advances the job one ``Step`` and answers; a
  ``Scenario`` adds a queue, failures, an expiry (404), a shutdown, bad JSON or a stall.
* forwarding (``workers=[url, …]``): a real, small dispatcher. It polls each worker's
  /health, hands a job's two tracks to idle workers (one after the other when there is one
  worker) with POST /generate and ``seed_override`` = the worker's seed + track index,
  follows their phases, fetches /download/{file} and serves the bytes.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf

TRACKS = 2


@dataclass(frozen=True)
class Step:
    status: str  # queued / generating / superres / decoding / done
    worker_phase: str
    progress: int


STEPS = (
    Step("generating", "idle", 1), Step("generating", "loading_backbone", 1), Step("generating", "backbone", 40),
    Step("generating", "backbone", 80), Step("superres", "loading_superres", 1), Step("superres", "superres", 50),
    Step("decoding", "loading_decoder", 1), Step("decoding", "decoding", 1), Step("done", "idle", 100),
)


@dataclass
class Scenario:
    queue_polls: int = 0  # the job waits this many polls in the queue (position counting down)
    steps: tuple[Step, ...] = STEPS
    parallel: bool = True  # both tracks advance together (two workers) or one after the other
    fail: dict[int, str] = field(default_factory=dict)  # track → its error (instead of done)
    missing_wav: set[int] = field(default_factory=set)  # done, but its WAV never reached the dispatcher
    bad_wav: set[int] = field(default_factory=set)  # done, but its WAV bytes are not audio
    expire_after: int | None = None  # polls after which GET /job answers 404
    die_after: int | None = None  # polls after which the server stops listening
    bad_json_after: int | None = None  # polls after which GET /job answers something not JSON
    stall_after: int | None = None  # polls after which nothing moves any more
    total_gpus: int = 2
    refuse: str | None = None  # POST /generate answers 422 with this message


def sine_wav(freq: float, seconds: float = 0.1, rate: int = 44100) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.25 * np.stack([np.sin(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * 1.5 * t)], axis=1)
    out = io.BytesIO()
    sf.write(out, audio, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


class _Track:
    def __init__(self) -> None:
        self.status, self.worker_phase, self.progress = "queued", "idle", 0
        self.worker_id, self.duration_sec, self.error = -1, 0.0, None
        self.wav: bytes | None = None
        self.mp3: bytes | None = None

    def as_json(self, index: int) -> dict[str, Any]:
        return {"index": index, "status": self.status, "progress": self.progress,
                "phase_display": f"{self.status} · {self.progress}%", "worker_id": self.worker_id,
                "worker_phase": self.worker_phase, "duration_sec": self.duration_sec, "error": self.error}


class _Job:
    def __init__(self, body: dict[str, Any], cleaned: str) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.body, self.cleaned_lyrics, self.created = body, cleaned, time.time()
        self.tracks = [_Track() for _ in range(TRACKS)]
        self.queue_position, self.polls, self.step = 0, 0, 0

    @property
    def status(self) -> str:
        s = [t.status for t in self.tracks]
        if all(x == "done" for x in s):
            return "completed"
        if "error" in s and all(x in ("done", "error") for x in s):
            return "partial"
        if any(x in ("generating", "superres", "decoding") for x in s):
            return "generating"
        return "queued" if all(x == "queued" for x in s) else "pending"

    def as_json(self) -> dict[str, Any]:
        return {"job_id": self.id, "status": self.status, "queue_position": self.queue_position,
                "cleaned_lyrics": self.cleaned_lyrics, "tracks": [t.as_json(i) for i, t in enumerate(self.tracks)],
                "created_at": self.created}


class _Worker:
    def __init__(self, index: int, url: str) -> None:
        self.index, self.url = index, url
        self.status, self.phase, self.progress, self.seed = "offline", "idle", 0, 0
        self.reserved = False


def _body_fields(raw: Any) -> dict[str, Any] | str:
    """pydantic-like: the body with defaults, or the first field error."""
    if not isinstance(raw, dict):
        return "body: Input should be a valid dictionary"
    spec = {"mode": (str, "vocal"), "prompt_mode": (str, "tags"), "prompt": (str, ""), "tags": (str, ""),
            "lyrics": (str, ""), "duration": (int, 3), "top_k_bb": (int, 80), "temperature": (float, 1.0)}
    out = {}
    for name, (kind, default) in spec.items():
        value = raw.get(name, default)
        ok = isinstance(value, str) if kind is str else (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and (kind is float or float(value).is_integer()))
        if not ok:
            return f"{name}: Input should be a valid {kind.__name__}"
        out[name] = kind(value)
    return out


def _clean(lyrics: str) -> str:
    """The dispatcher cleans lyrics; the stand-in only needs a visible effect (curly quotes)."""
    return lyrics.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"').strip()


def worker_payload(body: dict[str, Any], seed_override: int) -> dict[str, Any]:
    """What the dispatcher sends a worker for a (validated) POST /generate body."""
    tags_mode = body["prompt_mode"] == "tags"
    text = body["tags"] if tags_mode else body["prompt"]
    return {"genre": "", "language": "Instrumental" if body["mode"] == "instrumental" else "",
            "tags": text if tags_mode else "", "description": "" if tags_mode else text,
            "duration": min(10, max(1, body["duration"])),
            "lyrics": _clean(body["lyrics"]) if body["mode"] == "vocal" else "",
            "backbone_name": "", "superres_name": "", "top_k_bb": min(200, max(1, body["top_k_bb"])),
            "top_k_sr": 10, "temperature": min(1.4, max(0.6, body["temperature"])),
            "superres_text_mode": "same_as_backbone_no_description", "raw_user_input": text,
            "raw_mode": body["mode"], "raw_prompt_mode": body["prompt_mode"], "seed_override": seed_override}


class FakeDispatcher:
    def __init__(self, scenario: Scenario | None = None, *, workers: list[str] | None = None,
                 health_interval_s: float = 0.02) -> None:
        self.scenario = scenario or Scenario()
        self.workers = [_Worker(i, url) for i, url in enumerate(workers or [])]
        self.jobs: dict[str, _Job] = {}
        self.bodies: list[dict[str, Any]] = []
        self.payloads: list[dict[str, Any]] = []
        self.worker_answers: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.lock = threading.RLock()
        self._health_interval = health_interval_s
        self._stop = threading.Event()
        handler = type("Handler", (_Handler,), {"dispatcher": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                          daemon=True)]
        if self.workers:
            self._threads.append(threading.Thread(target=self._health_loop, daemon=True))
        self._stopped = False

    def __enter__(self) -> "FakeDispatcher":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        with self.lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    # -- scripted mode ---------------------------------------------------------------------
    def _advance(self, job: _Job) -> None:
        sc = self.scenario
        job.polls += 1
        if sc.stall_after is not None and job.polls > sc.stall_after:
            return
        if job.polls <= sc.queue_polls:
            job.queue_position = sc.queue_polls - job.polls + 1
            return
        job.queue_position = 0
        job.step += 1
        n = len(sc.steps)
        for i, track in enumerate(job.tracks):
            k = job.step if sc.parallel else job.step - i * n
            if k <= 0 or track.status in ("done", "error"):
                continue
            step = sc.steps[min(k, n) - 1]
            track.worker_id = i if sc.parallel else 0
            if step.status == "done" and i in sc.fail:
                track.status, track.error, track.progress, track.worker_phase = "error", sc.fail[i], 0, "idle"
                continue
            track.status, track.worker_phase, track.progress = step.status, step.worker_phase, step.progress
            if step.status == "done":
                track.duration_sec = 0.1
                if i in sc.bad_wav:
                    track.wav = b"RIFF\x00\x00\x00\x00WAVEnot audio"
                elif i not in sc.missing_wav:
                    track.wav = sine_wav(440.0 * (i + 1))

    # -- forwarding mode -------------------------------------------------------------------
    def _get_json(self, url: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())

    def _health_loop(self) -> None:
        while not self._stop.is_set():
            for w in self.workers:
                try:
                    data = self._get_json(f"{w.url}/health")
                    with self.lock:
                        w.status, w.phase = data.get("status", "offline"), data.get("phase", "idle")
                        w.progress, w.seed = data.get("progress", 0), data.get("seed", 0)
                except (OSError, ValueError):
                    with self.lock:
                        w.status, w.phase, w.progress = "offline", "idle", 0
            self._sync_and_dispatch()
            self._stop.wait(self._health_interval)

    def _sync_and_dispatch(self) -> None:
        phase_status = {"loading_backbone": "generating", "backbone": "generating", "loading_superres": "superres",
                        "superres": "superres", "loading_decoder": "decoding", "decoding": "decoding"}
        with self.lock:
            for job in self.jobs.values():
                for t in job.tracks:
                    if t.status in ("generating", "superres", "decoding") and t.worker_id >= 0:
                        w = self.workers[t.worker_id]
                        t.worker_phase, t.progress = w.phase, max(1, min(99, w.progress))
                        t.status = phase_status.get(w.phase, t.status)
            queued = [j for j in self.jobs.values() if all(t.status == "queued" for t in j.tracks)
                      and not getattr(j, "dispatched", False)]
            for pos, job in enumerate(queued, start=1):
                idle = [w for w in self.workers if w.status == "idle" and not w.reserved]
                need = max(1, min(TRACKS, len(self.workers)))
                if len(idle) < need:
                    job.queue_position = pos
                    continue
                job.dispatched, job.queue_position = True, 0
                chosen = idle[:need]
                for w in chosen:
                    w.reserved = True
                threading.Thread(target=self._run_job, args=(job, chosen), daemon=True).start()

    def _run_job(self, job: _Job, workers: list[_Worker]) -> None:
        for start in range(0, TRACKS, len(workers)):
            threads = [threading.Thread(target=self._run_track, args=(job, start + k, w))
                       for k, w in enumerate(workers) if start + k < TRACKS]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        with self.lock:
            for w in workers:
                w.reserved = False

    def _run_track(self, job: _Job, index: int, w: _Worker) -> None:
        track = job.tracks[index]
        with self.lock:
            track.status, track.worker_id = "generating", w.index
            payload = worker_payload(job.body, int(w.seed) + index)
            self.payloads.append(payload)
        try:
            req = urllib.request.Request(f"{w.url}/generate", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                answer = json.loads(r.read())
            self.worker_answers.append(answer)
            if answer.get("status") != "ok":
                raise RuntimeError(answer.get("error", "Unknown worker error"))
            files = {}
            for key in ("mp3_filename", "wav_filename"):
                with urllib.request.urlopen(f"{w.url}/download/{answer[key]}", timeout=10) as r:
                    files[key] = r.read()
            with self.lock:
                track.mp3, track.wav = files["mp3_filename"], files["wav_filename"]
                track.duration_sec, track.status, track.progress = answer.get("duration_sec", 0), "done", 100
        except Exception as e:  # the upstream dispatcher keeps the text as the track's error
            with self.lock:
                track.status, track.error = "error", str(e)

    # -- HTTP ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.lock:
            total = len(self.workers) if self.workers else self.scenario.total_gpus
            idle = sum(w.status == "idle" for w in self.workers) if self.workers else total
            return {"total_gpus": total, "idle_gpus": idle,
                    "active_jobs": sum(j.status in ("generating", "pending") for j in self.jobs.values()),
                    "queued_jobs": sum(j.status == "queued" for j in self.jobs.values()),
                    "workers": [{"worker_id": w.index, "url": w.url, "status": w.status, "phase": w.phase,
                                 "gpu_id": 0} for w in self.workers]}

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.bodies.append(body)
            job = _Job(body, _clean(body["lyrics"]) if body["mode"] == "vocal" else "")
            self.jobs[job.id] = job
            if not self.workers:
                job.queue_position = self.scenario.queue_polls
        if self.workers:
            self._sync_and_dispatch()
        with self.lock:
            queued = job.queue_position > 0 if not self.workers else not getattr(job, "dispatched", False)
            return {"status": "queued" if queued else "accepted", "job_id": job.id, "num_tracks": TRACKS,
                    "queue_position": job.queue_position if queued else 0}


class _Handler(BaseHTTPRequestHandler):
    dispatcher: FakeDispatcher

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, code: int, data: Any) -> None:
        self._bytes(code, json.dumps(data).encode(), "application/json")

    def _bytes(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        d = self.dispatcher
        d.requests.append(f"POST {self.path}")
        if self.path != "/generate":
            return self._json(404, {"detail": "Not Found"})
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = _body_fields(json.loads(raw))
        except ValueError:
            body = "body: JSON decode error"
        if isinstance(body, str):
            return self._json(422, {"detail": [{"loc": ["body", body.split(":")[0]], "msg": body.split(": ", 1)[-1],
                                                "type": "value_error"}]})
        if d.scenario.refuse:
            return self._json(422, {"detail": d.scenario.refuse})
        self._json(200, d.create(body))

    def do_GET(self) -> None:
        d = self.dispatcher
        d.requests.append(f"GET {self.path}")
        parts = urlsplit(self.path).path.strip("/").split("/")
        if parts == ["status"]:
            return self._json(200, d.status())
        if len(parts) < 2 or parts[0] != "job":
            return self._json(404, {"detail": "Not Found"})
        with d.lock:
            job = d.jobs.get(parts[1])
        if job is None:
            return self._json(404, {"status": "error", "error": f"Job {parts[1]} not found."})
        if len(parts) == 2:
            return self._job(job)
        if len(parts) == 5 and parts[2] == "track" and parts[4] in ("wav", "mp3"):
            try:
                index = int(parts[3])
            except ValueError:
                return self._json(422, {"detail": "track_idx must be an integer"})
            if not 0 <= index < TRACKS:
                return self._json(400, {"error": "Track index out of range."})
            track = job.tracks[index]
            data = track.wav if parts[4] == "wav" else (track.mp3 or track.wav)
            if track.status != "done" or not data:
                return self._json(404, {"error": "Track not ready or WAV not available."})
            return self._bytes(200, data, "audio/wav" if parts[4] == "wav" else "audio/mpeg")
        return self._json(404, {"detail": "Not Found"})

    def _job(self, job: _Job) -> None:
        d, sc = self.dispatcher, self.dispatcher.scenario
        with d.lock:
            if not d.workers:
                d._advance(job)
            polls = job.polls
            answer = job.as_json()
        if sc.expire_after is not None and polls > sc.expire_after:
            with d.lock:
                d.jobs.pop(job.id, None)
            return self._json(404, {"status": "error", "error": f"Job {job.id} not found."})
        if sc.die_after is not None and polls > sc.die_after:
            threading.Thread(target=d.stop, daemon=True).start()
            self.close_connection = True
            return None
        if sc.bad_json_after is not None and polls > sc.bad_json_after:
            return self._bytes(200, b"<html>502 Bad Gateway</html>", "text/html")
        self._json(200, answer)
