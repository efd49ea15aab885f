"""RemotePipeline against a loopback stand-in of the upstream dispatcher (scripted jobs)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from dispatcher_standin import FakeDispatcher, Scenario, sine_wav

from engine.errors import Cancelled, KhalaError, RequestError
from engine.events import QUEUED, SONG_STAGES, CancelToken, Log, Progress, Song, Stage
from engine.pipeline import Pipeline
from engine.remote import protocol as P
from engine.remote.client import RemotePipeline, ServerError, decode_wav, normalise_server_url
from engine.request import SongRequest

REQ = SongRequest(tags="Pop, Piano", lyrics="[Verse]\nla la", minutes=2, variations=2)
FAST = dict(poll_s=0.005, timeout_s=2.0, retry_s=0.3, stall_timeout_s=0.3, queue_timeout_s=2.0)


def run(url: str, request: SongRequest = REQ, cancel: CancelToken | None = None, **knobs: Any) -> list:
    return list(RemotePipeline(url, **{**FAST, **knobs}).generate(request, cancel))


def run_until_error(url: str, request: SongRequest = REQ, **knobs: Any) -> tuple[list, KhalaError]:
    events: list = []
    with pytest.raises(KhalaError) as info:
        for event in RemotePipeline(url, **{**FAST, **knobs}).generate(request):
            events.append(event)
    return events, info.value


def songs(events: list) -> list[Song]:
    return [e for e in events if isinstance(e, Song)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_full_job() -> None:
    with FakeDispatcher() as d:
        events = run(d.url)
    assert d.bodies == [P.generate_body(REQ)]
    track0 = [e.name for e in events if isinstance(e, Stage) and e.variation == 0]
    assert track0 == list(SONG_STAGES)  # the worker's phases, in our names, in order
    progress = [e for e in events if isinstance(e, Progress)]
    assert {p.stage for p in progress} == {"backbone", "superres", "decode"}
    assert [p.done for p in progress if p.stage == "backbone"] == [40, 80] and all(p.total == 100 for p in progress)
    a, b = songs(events)
    assert (a.variation, b.variation) == (0, 1)
    for song, freq in ((a, 440.0), (b, 880.0)):
        expected, rate = decode_wav(sine_wav(freq))
        assert song.audio.dtype == np.float32 and song.audio.shape == (2, 4410) and song.sample_rate == rate
        np.testing.assert_array_equal(song.audio, expected)
        assert song.codes is None and song.metadata["seed"] is None
    assert a.metadata["engine"] == {"kind": "remote", "server": d.url, "job_id": next(iter(d.jobs)), "track": 0}
    assert b.metadata["engine"]["track"] == 1
    assert a.metadata["request"] == REQ.to_dict() and a.metadata["server"]["sent"] == P.generate_body(REQ)
    assert a.metadata["seconds"] == 0.1 and set(SONG_STAGES) <= set(a.metadata["timings_s"])
    assert not any(isinstance(e, Log) and e.level == "warning" and "always makes" in e.text for e in events)


def test_one_variation_asked_both_tracks_returned_with_a_warning() -> None:
    with FakeDispatcher() as d:
        events = run(d.url, dataclasses.replace(REQ, variations=1))
    assert len(songs(events)) == 2
    warnings = [e.text for e in events if isinstance(e, Log) and e.level == "warning"]
    assert any("always makes 2 songs" in w for w in warnings) and any("no cancel" in w for w in warnings)


def test_queued_job_reports_queue_positions_then_runs() -> None:
    with FakeDispatcher(Scenario(queue_polls=3)) as d:
        events = run(d.url)
    stages = [e for e in events if isinstance(e, Stage)]
    assert stages[0] == Stage(QUEUED) and stages[1].name == "load_backbone"
    positions = [e.text for e in events if isinstance(e, Log) and "queue: position" in e.text]
    assert positions == [f"Waiting in the Khala server's queue: position {n}." for n in (3, 2, 1)]
    song = songs(events)[0]
    assert QUEUED in song.metadata["timings_s"]


def test_partial_job_returns_the_good_song_and_says_why_the_other_failed() -> None:
    trace = "Traceback (most recent call last):\n  File \"w.py\"\nRuntimeError: CUDA out of memory\n"
    with FakeDispatcher(Scenario(parallel=False, fail={0: trace})) as d:
        events = run(d.url)
    (song,) = songs(events)
    assert song.variation == 0 and song.metadata["engine"]["track"] == 1
    np.testing.assert_array_equal(song.audio, decode_wav(sine_wav(880.0))[0])
    (warning,) = [e.text for e in events if isinstance(e, Log) and "made 1 of 2" in e.text]
    assert "song 1: RuntimeError: CUDA out of memory" in warning and "Traceback" not in warning
    # one worker: track 2 waited while track 1 ran (the "pending" job status), then ran itself
    assert [e.name for e in events if isinstance(e, Stage) and e.variation == 1][:2] == [QUEUED, "load_backbone"]


def test_every_track_failing_is_one_error_and_no_song() -> None:
    with FakeDispatcher(Scenario(fail={0: "worker crashed", 1: "Traceback\nValueError: bad codes"})) as d:
        events, error = run_until_error(d.url)
    assert not songs(events)
    assert str(error) == (f"The Khala server could not make the songs of job {next(iter(d.jobs))}: "
                          "song 1: worker crashed; song 2: ValueError: bad codes.")


@pytest.mark.parametrize("scenario, words", [
    (Scenario(missing_wav={1}), "song 2: the server has no audio for it"),
    (Scenario(bad_wav={0}), "song 1: its WAV is not readable audio"),
])
def test_a_done_track_without_usable_audio_is_a_failed_track(scenario: Scenario, words: str) -> None:
    with FakeDispatcher(scenario) as d:
        events = run(d.url)
    assert len(songs(events)) == 1
    assert any(words in e.text for e in events if isinstance(e, Log) and e.level == "warning")


def test_expired_job_404() -> None:
    with FakeDispatcher(Scenario(expire_after=3)) as d:
        events, error = run_until_error(d.url)
    assert not songs(events)
    assert isinstance(error, ServerError) and "is gone from the Khala server" in str(error) and "expired" in str(error)


def test_server_that_stops_mid_job() -> None:
    with FakeDispatcher(Scenario(die_after=3)) as d:
        start = time.monotonic()
        events, error = run_until_error(d.url, retry_s=0.3)
        elapsed = time.monotonic() - start
    assert not songs(events) and any(isinstance(e, Progress) for e in events)
    assert "stopped answering while job" in str(error) and "gave up after 0.3 s" in str(error)
    assert elapsed < 3


def test_bad_json() -> None:
    with FakeDispatcher(Scenario(bad_json_after=2)) as d:
        events, error = run_until_error(d.url)
    assert not songs(events)
    assert "with something that is not JSON: b'<html>502 Bad Gateway</html>'" in str(error)
    assert len(str(error)) < 300


def test_stalled_server_gives_up_after_the_stall_timeout() -> None:
    with FakeDispatcher(Scenario(stall_after=3)) as d:
        start = time.monotonic()
        events, error = run_until_error(d.url, stall_timeout_s=0.4)
        elapsed = time.monotonic() - start
    assert "No progress on job" in str(error) and 0.4 <= elapsed < 3
    assert not songs(events)


def test_queue_wait_is_bounded() -> None:
    with FakeDispatcher(Scenario(queue_polls=10**6)) as d:
        events, error = run_until_error(d.url, queue_timeout_s=0.3, stall_timeout_s=0.05)
    assert "in the Khala server's queue without starting" in str(error)
    assert events[-1].text.startswith("Waiting in the Khala server's queue")  # the stall timer does not apply


def test_server_down_before_sending() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    events, error = run_until_error(url)
    assert str(error) == f"Cannot reach the Khala server at {url}: connection refused."


def test_server_without_workers() -> None:
    with FakeDispatcher(Scenario(total_gpus=0)) as d:
        _, error = run_until_error(d.url)
    assert "has no workers" in str(error) and d.bodies == []


def test_server_refusing_the_body() -> None:
    with FakeDispatcher(Scenario(refuse="duration: Input should be a valid integer")) as d:
        _, error = run_until_error(d.url)
    assert str(error) == "The Khala server refused the request: duration: Input should be a valid integer"


@pytest.mark.parametrize("change", [{"seed": 3}, {"minutes": 0}, {"temperature": 0.0}, {"top_k_superres": 5},
                                    {"variations": 4}, {"max_tokens": 50}])
def test_refusals_happen_before_any_request(change: dict) -> None:
    with FakeDispatcher() as d:
        generator = RemotePipeline(d.url, **FAST).generate(dataclasses.replace(REQ, **change))
        with pytest.raises(RequestError):
            next(generator)
    assert d.requests == []


class _HealthOnly(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        found = self.path == "/health"
        body = json.dumps({"status": "idle", "phase": "idle"} if found else {"detail": "Not Found"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Nested(BaseHTTPRequestHandler):
    """A hostile server: every answer is 200 and 400 kB of nested JSON arrays."""

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        body = b"[" * 200_000 + b"]" * 200_000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


def _error_from(handler: type[BaseHTTPRequestHandler]) -> KhalaError:
    """The client's error against a loopback server answering every request with ``handler``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        return run_until_error(f"http://127.0.0.1:{server.server_address[1]}")[1]
    finally:
        server.shutdown()
        server.server_close()


def test_deeply_nested_json_from_a_server_is_one_error() -> None:
    # json.loads raised RecursionError: a traceback from `khala generate --server`
    error = _error_from(_Nested)
    assert isinstance(error, ServerError) and len(str(error)) < 400


def test_pointing_at_a_worker_instead_of_the_dispatcher_is_named() -> None:
    assert "is a Khala worker, not the dispatcher" in str(_error_from(_HealthOnly))


def _cancel_after(token: CancelToken, seconds: float) -> None:
    threading.Timer(seconds, token.cancel).start()


def test_cancel_while_queued_stops_promptly_and_says_the_server_keeps_going() -> None:
    token = CancelToken()
    with FakeDispatcher(Scenario(queue_polls=10**6)) as d:
        _cancel_after(token, 0.2)
        start = time.monotonic()
        with pytest.raises(Cancelled) as info:
            run(d.url, cancel=token, poll_s=0.05)
        elapsed = time.monotonic() - start
    job = next(iter(d.jobs))
    assert str(info.value) == (f"Cancelled: stopped waiting for job {job}. The Khala server has no cancel "
                               "and keeps making its songs.")
    assert elapsed < 2.0  # polls forever otherwise


def test_cancel_during_a_hanging_poll_is_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /job hangs (a stuck proxy): cancel must not wait for the HTTP timeout."""
    import dispatcher_standin

    original = dispatcher_standin._Handler._job

    def hang(self: Any, job: Any) -> None:
        time.sleep(5)
        original(self, job)

    monkeypatch.setattr(dispatcher_standin._Handler, "_job", hang)
    token = CancelToken()
    with FakeDispatcher() as d:
        _cancel_after(token, 0.3)
        start = time.monotonic()
        with pytest.raises(Cancelled, match="stopped waiting for job"):
            run(d.url, cancel=token, timeout_s=10)
        assert time.monotonic() - start < 2.5  # the poll itself hangs 5 s


@pytest.mark.parametrize("url, expected", [
    ("http://mac.local:8888/", "http://mac.local:8888"),
    ("  10.0.0.5:8889 ", "http://10.0.0.5:8889"),
    ("https://khala.example/api/", "https://khala.example/api"),
])
def test_server_address_normalised(url: str, expected: str) -> None:
    assert normalise_server_url(url) == expected


@pytest.mark.parametrize("url, words", [
    ("ftp://host", "looks like http://host:8888"),
    ("http://user:pw@host", "no authentication"),
    ("http://host:8888/?x=1", "no '\\?' or '#'"),
    ("http://host:99999", "not a number from 1 to 65535"),
    ("http://", "looks like"),
    ("http://[::1", "looks like"),  # urlsplit raises ValueError: was a traceback
    ("http://[not-an-ip]:8888", "looks like"),
])
def test_bad_server_addresses(url: str, words: str) -> None:
    with pytest.raises(RequestError, match=words):
        RemotePipeline(url)


def test_drop_in_for_pipeline() -> None:
    local, remote = inspect.signature(Pipeline.generate), inspect.signature(RemotePipeline.generate)
    assert list(local.parameters) == list(remote.parameters)
    assert callable(RemotePipeline.unload)


def _wav(frames: np.ndarray, subtype: str = "PCM_16") -> bytes:
    import io

    import soundfile as sf
    out = io.BytesIO()
    sf.write(out, frames, 44100, format="WAV", subtype=subtype)
    return out.getvalue()


def test_decode_wav_gives_float32_stereo_or_a_reason() -> None:
    mono = np.linspace(-0.5, 0.5, 100)
    audio, rate = decode_wav(_wav(mono))
    assert audio.dtype == np.float32 and audio.shape == (2, 100) and rate == 44100
    np.testing.assert_array_equal(audio[0], audio[1])
    with pytest.raises(ValueError, match="expected stereo audio, got 3 channels"):
        decode_wav(_wav(np.zeros((10, 3))))
    with pytest.raises(ValueError, match="NaN or infinite"):
        decode_wav(_wav(np.array([[0.1, np.nan]] * 4), subtype="FLOAT"))
    with pytest.raises(ValueError, match="empty"):
        decode_wav(_wav(np.zeros((0, 2))))
    with pytest.raises(ValueError, match="not readable audio"):
        decode_wav(b"ID3 an mp3, not a wav")
