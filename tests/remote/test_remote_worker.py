"""``khala worker`` over real HTTP on 127.0.0.1 with the tiny checkpoint, and the client driving a
stand-in dispatcher that forwards to it."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import numpy as np
import pytest
import soundfile as sf
from dispatcher_standin import FakeDispatcher

from engine.errors import KhalaError, RequestError, WeightsError
from engine.events import BACKBONE, DECODE, SUPERRES, CancelToken, Progress, Song, Stage
from engine.pipeline import Pipeline
from engine.remote import protocol as P
from engine.remote import worker as W
from engine.remote.client import RemotePipeline
from engine.request import SongRequest

ROOT = Path(__file__).resolve().parents[2]
MAX_TOKENS = 16
PAYLOAD = P.dispatcher_worker_payload({"tags": "Pop, Piano", "lyrics": "[Verse]\nla la", "duration": 1}, 4321)
PHASES = ["loading_backbone", "backbone", "loading_superres", "superres", "loading_decoder", "decoding"]


@pytest.fixture(scope="module")
def pipeline(tiny_weights: Path, single_torch_thread: None) -> Pipeline:
    return Pipeline(tiny_weights, device="cpu")


class Gated:
    """The real pipeline, held after each Stage until the test lets it go (or the job is cancelled)."""

    def __init__(self, inner: Pipeline) -> None:
        self.inner, self.go = inner, threading.Semaphore(0)
        self.device = inner.device

    def generate(self, request: SongRequest, cancel: CancelToken | None = None) -> Iterator[Any]:
        cancel = cancel or CancelToken()
        for event in self.inner.generate(request, cancel):
            yield event
            if isinstance(event, Stage):
                while not self.go.acquire(timeout=0.01) and not cancel.cancelled:
                    pass


class Harness:
    def __init__(self, pipeline: Any, ttl_s: float = 60.0) -> None:
        self.worker = W.Worker(pipeline, max_tokens=MAX_TOKENS, keepalive_s=0.02, files=W.FileStore(ttl_s),
                               log=io.StringIO())
        self.server = W.make_server(self.worker, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.worker.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.worker.files.close()

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())

    def generate(self, payload: Any = PAYLOAD) -> dict[str, Any]:
        req = urllib.request.Request(self.url + "/generate", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def raw(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def wait_for(self, check: Any, timeout: float = 10.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            health = self.health()
            if check(health):
                return health
            assert time.monotonic() < end, f"worker never got there; last /health: {health}"
            time.sleep(0.005)


@contextmanager
def serving(pipeline: Any, ttl_s: float = 60.0) -> Iterator[Harness]:
    harness = Harness(pipeline, ttl_s)
    try:
        yield harness
    finally:
        harness.close()


def test_health_goes_idle_then_through_every_phase_then_idle(pipeline: Pipeline) -> None:
    gated = Gated(pipeline)
    with serving(gated) as h:
        before = h.health()
        assert {k: before[k] for k in ("status", "phase", "progress", "progress_detail")} == \
            {"status": "idle", "phase": "idle", "progress": 0, "progress_detail": ""}
        assert before["seed"] > 0 and before["max_tokens"] == MAX_TOKENS
        answer: list[dict] = []
        poster = threading.Thread(target=lambda: answer.append(h.generate()))
        poster.start()
        seen = []
        for phase in PHASES:
            health = h.wait_for(lambda s, phase=phase: s["phase"] == phase)
            assert health["status"] == "busy"
            seen.append((phase, health["progress"], health["progress_detail"]))
            if phase == "superres":  # a second job while busy: upstream's answer, nothing started
                assert h.generate() == P.BUSY_ANSWER
            gated.go.release()
        poster.join(30)
        after = h.health()
    assert [s[0] for s in seen] == PHASES
    assert seen[-1] == ("decoding", 0, "decoding audio")
    assert answer[0]["status"] == "ok" and answer[0]["seed"] == 4321
    assert (after["status"], after["phase"], after["progress"]) == ("idle", "idle", 0)
    assert after["seed"] != before["seed"]  # a fresh base seed for the next job


def test_progress_reported_as_the_dispatcher_reads_it() -> None:
    state = W.WorkerState(seed=1)
    state.on_event(Stage(BACKBONE))
    state.on_event(Progress(BACKBONE, 5, 20))
    assert (state.snapshot()["phase"], state.snapshot()["progress"], state.snapshot()["progress_detail"]) == \
        ("backbone", 25, "5/20 tokens")
    state.on_event(Stage(SUPERRES))
    state.on_event(Progress(SUPERRES, 62, 62))
    assert (state.snapshot()["progress"], state.snapshot()["progress_detail"]) == (99, "62/62 layers")
    state.on_event(Stage(DECODE))
    assert state.snapshot()["progress_detail"] == "decoding audio"
    assert set(P.HEALTH_FIELDS) == set(state.snapshot())


def test_generate_returns_the_files_and_each_is_served_then_removed(pipeline: Pipeline) -> None:
    with serving(pipeline) as h:
        answer = h.generate()
        assert set(P.GENERATE_RESULT_FIELDS) <= set(answer) and answer["status"] == "ok"
        wav, mp3 = answer["wav_filename"], answer["mp3_filename"]
        assert wav.endswith(".wav") and mp3.endswith(".mp3") and wav[:-4] == mp3[:-4]
        assert sorted(p.name for p in h.worker.files.dir.iterdir()) == sorted([wav, mp3])
        code, data = h.raw("GET", f"/download/{wav}")
        assert code == 200
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert rate == 44100 and audio.shape[1] == 2 and audio.shape[0] % 2048 == 0
        assert answer["duration_sec"] == round(audio.shape[0] / rate, 1)
        assert answer["seed"] == 4321 and 2 <= answer["backbone_tokens"] <= MAX_TOKENS
        assert h.raw("GET", f"/download/{wav}")[0] == 404  # served once: gone
        code, data = h.raw("GET", f"/download/{mp3}")
        assert code == 200 and sf.read(io.BytesIO(data))[0].shape[1] == 2
        assert list(h.worker.files.dir.iterdir()) == []


def test_download_refuses_every_other_path(pipeline: Pipeline, tmp_path: Path) -> None:
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"not yours")
    with serving(pipeline) as h:
        answer = h.generate()
        wav, mp3, folder = answer["wav_filename"], answer["mp3_filename"], h.worker.files.dir
        (folder / "stray.wav").write_bytes(b"not written by the worker")
        os.symlink(secret, folder / "link.wav")
        (folder / mp3).unlink()
        os.symlink(secret, folder / mp3)  # one of ours, swapped for a link
        refused = [
            f"/download/../../../..{secret}", "/download/..%2F..%2F..%2F..%2F" + quote(str(secret)[1:]),
            "/download/" + quote(str(secret), safe=""), f"/download/{secret}", f"/download//{wav}",
            "/download/" + quote(str(folder / wav), safe=""), f"/download/{wav}/../{wav}",
            f"/download/%2E%2E%2F{folder.name}%2F{wav}", "/download/stray.wav", "/download/link.wav",
            f"/download/{mp3}", "/download/", "/download/.", "/download/..", f"/download/{wav}%00.txt",
        ]
        for path in refused:
            code, body = h.raw("GET", path)
            assert code == 404, path
            assert b"not yours" not in body and json.loads(body)["status"] == "error"
        code, data = h.raw("GET", f"/download/{wav}")  # the file itself is still served
        assert code == 200 and data[:4] == b"RIFF"


def test_files_never_fetched_are_removed_after_their_time(pipeline: Pipeline) -> None:
    with serving(pipeline, ttl_s=0.2) as h:
        answer = h.generate()
        assert len(list(h.worker.files.dir.iterdir())) == 2
        time.sleep(0.3)
        h.health()  # any request sweeps
        assert list(h.worker.files.dir.iterdir()) == []
        assert h.raw("GET", f"/download/{answer['wav_filename']}")[0] == 404
        folder = h.worker.files.dir
    assert not folder.exists()  # the private folder goes with the worker


def test_file_named_twice_is_kept_for_both_downloads(tmp_path: Path) -> None:
    store = W.FileStore()
    (store.dir / "a.wav").write_bytes(b"RIFF")
    store.add("a.wav", downloads=2)  # upstream's MP3 fallback names the WAV twice
    for _ in range(2):
        handle, size = store.open("a.wav")
        handle.close()
        store.served("a.wav")
    assert store.open("a.wav") is None and not (store.dir / "a.wav").exists()
    store.close()
    assert not store.dir.exists()


def test_answer_streams_keepalive_spaces_and_a_hangup_cancels_the_song(pipeline: Pipeline) -> None:
    gated = Gated(pipeline)
    with serving(gated) as h:
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=5)
        conn.request("POST", "/generate", body=json.dumps(PAYLOAD), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()  # headers at once, while the song waits at its first stage
        assert resp.status == 200 and resp.read(3) == b"   "
        assert h.health()["status"] == "busy"
        resp.close()
        conn.close()  # the dispatcher gives up
        h.wait_for(lambda s: s["status"] == "idle")
        assert h.worker.files.names() == [] and list(h.worker.files.dir.iterdir()) == []
        assert "cancelled" in h.worker._log.getvalue()
        # and a whole answer with leading spaces is valid JSON
        done: list[dict] = []
        poster = threading.Thread(target=lambda: done.append(h.generate()))
        poster.start()
        time.sleep(0.1)
        for _ in PHASES:
            gated.go.release()
        poster.join(30)
    assert done[0]["status"] == "ok"


def test_bad_requests_get_clear_answers_and_leave_the_worker_idle(pipeline: Pipeline) -> None:
    with serving(pipeline) as h:
        code, body = h.raw("POST", "/generate", b"{not json")
        assert (code, json.loads(body)) == (400, {"status": "error", "error": "The body is not JSON."})
        # 400 kB of nesting (under the size limit) was a RecursionError: a traceback and no answer
        code, body = h.raw("POST", "/generate", b"[" * 200_000 + b"]" * 200_000)
        assert (code, json.loads(body)) == (400, {"status": "error", "error": "The body is not JSON."})
        code, body = h.raw("POST", "/generate", json.dumps({**PAYLOAD, "duration": "three"}).encode())
        assert code == 200 and json.loads(body) == {
            "status": "error", "error": "Payload field 'duration' must be a whole number; got 'three'."}
        code, body = h.raw("POST", "/generate", json.dumps({**PAYLOAD, "lyrics": ""}).encode())
        assert json.loads(body)["error"] == "A sung song needs lyrics (or choose Instrumental)."
        assert h.raw("GET", "/nothing")[0] == 404 and h.raw("POST", "/health", b"{}")[0] == 404
        with socket.create_connection(("127.0.0.1", h.port), timeout=5) as sock:  # announced, never sent
            sock.sendall(f"POST /generate HTTP/1.1\r\nContent-Length: {W.MAX_BODY_BYTES + 1}\r\n\r\n".encode())
            assert sock.recv(64).startswith(b"HTTP/1.0 413")
        assert h.health()["status"] == "idle" and h.worker.files.names() == []


def test_client_drives_a_dispatcher_that_forwards_to_our_worker(pipeline: Pipeline) -> None:
    """RemotePipeline → stand-in dispatcher (worker protocol) → khala worker → the tiny model."""
    request = SongRequest(tags="Pop, Piano", lyrics="[Verse]\nla la", minutes=1, variations=2)
    with serving(pipeline) as h, FakeDispatcher(workers=[h.url]) as d:
        events = list(RemotePipeline(d.url, poll_s=0.01, timeout_s=60).generate(request))  # a loaded CI machine
        stages = [e.name for e in events if isinstance(e, Stage)]
        leftover = list(h.worker.files.dir.iterdir())
    songs = [e for e in events if isinstance(e, Song)]
    assert len(songs) == 2 and "backbone" in stages and leftover == []
    assert [a["seed"] for a in d.worker_answers] == [p["seed_override"] for p in d.payloads]
    for song, payload in zip(songs, d.payloads):
        local = next(e for e in pipeline.generate(
            P.request_from_worker_payload(payload, worker_seed=0, max_tokens=MAX_TOKENS)) if isinstance(e, Song))
        assert song.audio.shape == local.audio.shape  # the same song our engine makes here, through 24-bit WAV
        np.testing.assert_allclose(song.audio, np.clip(local.audio, -1, 1), atol=2e-7)
        assert song.metadata["engine"]["kind"] == "remote" and song.codes is None


# -- the command ------------------------------------------------------------------------------
class _NoPipeline:
    device = "cpu"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _serve_briefly(monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, host: str) -> tuple[int, str, str]:
    """``serve`` with its listening socket forced onto 127.0.0.1, stopped once it is up."""
    real = W.make_server

    def loopback_server(worker: W.Worker, _host: str, port: int) -> Any:
        server = real(worker, "127.0.0.1", port)
        threading.Timer(0.2, server.shutdown).start()
        return server

    monkeypatch.setattr(W, "make_server", loopback_server)
    out, err = io.StringIO(), io.StringIO()
    code = W.serve(tiny_weights, host=host, port=0, max_tokens=None, device=None, dtype=None, out=out, err=err,
                   pipeline_factory=_NoPipeline)
    return code, out.getvalue(), err.getvalue()


def test_a_host_beyond_loopback_warns_that_there_is_no_authentication(monkeypatch: pytest.MonkeyPatch,
                                                                      tiny_weights: Path) -> None:
    code, out, err = _serve_briefly(monkeypatch, tiny_weights, "192.0.2.10")
    assert code == 0 and "listening on http://192.0.2.10:" in out and "stopped" in out
    assert "no authentication" in err
    code, out, err = _serve_briefly(monkeypatch, tiny_weights, "127.0.0.1")
    assert code == 0 and err == ""
    assert W.is_loopback("localhost") and W.is_loopback("::1") and not W.is_loopback("0.0.0.0")


def test_command_errors_come_before_serving(tiny_weights: Path, tmp_path: Path) -> None:
    kw = dict(host="127.0.0.1", device=None, dtype=None, out=io.StringIO(), err=io.StringIO(),
              pipeline_factory=_NoPipeline)
    with pytest.raises(RequestError, match="--max-tokens must be from 2 to 23,552; got 1"):
        W.serve(tiny_weights, port=0, max_tokens=1, **kw)
    with pytest.raises(RequestError, match="--max-tokens must be from 2 to 23,552; got 23553"):
        W.serve(tiny_weights, port=0, max_tokens=23_553, **kw)  # every song would fail validation
    with pytest.raises(RequestError, match="--port must be from 0 to 65535"):
        W.serve(tiny_weights, port=70000, max_tokens=None, **kw)
    with pytest.raises(WeightsError):
        W.serve(tmp_path, port=0, max_tokens=None, **kw)
    with serving(_NoPipeline()) as h, pytest.raises(KhalaError, match=f"Cannot listen on 127.0.0.1:{h.port}"):
        W.serve(tiny_weights, port=h.port, max_tokens=None, **kw)


def test_khala_worker_command_serves_health_and_stops_on_sigterm(tiny_weights: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker", "--weights", str(tiny_weights),
                             "--host", "127.0.0.1", "--port", "0", "--max-tokens", "8", "--device", "cpu",
                             "--dtype", "float32"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split("listening on ")[1].split()[0]
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            health = json.loads(r.read())
        assert (health["status"], health["phase"], health["max_tokens"], health["device"]) == ("idle", "idle", 8, "cpu")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0 and "stopped" in out and err == ""
