"""The whole pipeline on a tiny random checkpoint: shape, determinism, cancel, memory policy, dtypes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.errors import Cancelled
from engine.pipeline import Pipeline, expected_tokens
from engine.request import SAMPLE_RATE, SAMPLES_PER_FRAME, SongRequest
from engine.events import CancelToken, Log, Progress, Song, Stage

REQ = SongRequest(tags="Pop, Piano", lyrics="[Verse]\nhello world\nla la la", minutes=1, seed=7, max_tokens=24)


def run(pipeline: Pipeline, request: SongRequest, cancel: CancelToken | None = None) -> list:
    return list(pipeline.generate(request, cancel or CancelToken()))


def songs(events: list) -> list[Song]:
    return [e for e in events if isinstance(e, Song)]


@pytest.fixture(scope="module")
def pipeline(tiny_weights: Path) -> Pipeline:
    return Pipeline(tiny_weights, device="cpu")


def test_end_to_end_audio_is_finite_stereo_and_frame_exact(pipeline: Pipeline) -> None:
    events = run(pipeline, REQ)
    (song,) = songs(events)
    frames = song.codes.shape[1]
    assert song.codes.shape == (64, frames) and frames >= 1
    assert song.codes.dtype == np.int64 and song.codes.min() >= 0 and song.codes.max() <= 1023
    assert song.sample_rate == SAMPLE_RATE == 44_100
    assert song.audio.dtype == np.float32 and song.audio.shape == (2, frames * SAMPLES_PER_FRAME)
    assert np.isfinite(song.audio).all() and np.abs(song.audio).max() > 0
    meta = song.metadata
    assert meta["seed"] == 7 and meta["tokens"]["audio_frames"] == frames
    assert meta["tokens"]["generated"] <= 24 and meta["device"] == "cpu" and meta["dtype"] == "float32"
    assert meta["decoder_dtype"] == "float32"
    assert {"backbone", "superres", "decode", "load_backbone"} <= set(meta["timings_s"])


def test_stage_order_and_progress(pipeline: Pipeline) -> None:
    events = run(pipeline, REQ)
    stages = [e.name for e in events if isinstance(e, Stage)]
    assert stages == ["load_backbone", "backbone", "load_superres", "superres", "load_decoder", "decode"]
    sr = [e for e in events if isinstance(e, Progress) and e.stage == "superres"]
    assert sr and sr[-1].done == sr[-1].total == 62


def test_same_seed_same_codes_other_seed_other_codes(pipeline: Pipeline) -> None:
    a, = songs(run(pipeline, REQ))
    b, = songs(run(pipeline, REQ))
    c, = songs(run(pipeline, SongRequest(**{**REQ.to_dict(), "seed": 8})))
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.audio, b.audio)
    assert not np.array_equal(a.codes, c.codes)


def test_variations_use_consecutive_seeds(pipeline: Pipeline) -> None:
    request = SongRequest(**{**REQ.to_dict(), "variations": 2})
    first, second = songs(run(pipeline, request))
    assert (first.metadata["seed"], second.metadata["seed"]) == (7, 8)
    alone, = songs(run(pipeline, SongRequest(**{**REQ.to_dict(), "seed": 8})))
    assert np.array_equal(second.codes, alone.codes)


def test_random_seed_is_recorded_and_reproduces(pipeline: Pipeline) -> None:
    request = SongRequest(**{**REQ.to_dict(), "seed": None})
    song, = songs(run(pipeline, request))
    again, = songs(run(pipeline, SongRequest(**{**REQ.to_dict(), "seed": song.metadata["seed"]})))
    assert np.array_equal(song.codes, again.codes)


def test_cancel_stops_promptly(tiny_weights: Path) -> None:
    pipeline = Pipeline(tiny_weights, device="cpu")
    cancel = CancelToken()
    long_request = SongRequest(**{**REQ.to_dict(), "max_tokens": 23_552})
    seen: list = []

    def consume() -> None:
        try:
            for event in pipeline.generate(long_request, cancel):
                seen.append(event)
        except Cancelled as error:
            seen.append(error)
    thread = threading.Thread(target=consume)
    thread.start()
    deadline = time.monotonic() + 60
    while not any(isinstance(e, Progress) and e.stage == "backbone" for e in seen):
        assert time.monotonic() < deadline, "backbone never reported progress"
        time.sleep(0.01)
    cancelled_at = time.monotonic()
    cancel.cancel()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert time.monotonic() - cancelled_at < 5
    assert isinstance(seen[-1], Cancelled)
    assert not any(isinstance(e, Song) for e in seen)


def test_decoder_stays_float32_when_the_transformers_run_in_bfloat16(tiny_weights: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KHALA_DECODER_DTYPE", raising=False)
    pipeline = Pipeline(tiny_weights, device="cpu", dtype="bfloat16", keep_loaded=True)
    song, = songs(run(pipeline, SongRequest(**{**REQ.to_dict(), "max_tokens": 8})))
    assert song.metadata["dtype"] == "bfloat16" and song.metadata["decoder_dtype"] == "float32"
    assert pipeline._loaded["backbone"].lm_head.weight.dtype == torch.bfloat16
    assert {p.dtype for p in pipeline._loaded["decoder"].parameters()} == {torch.float32}
    assert np.isfinite(song.audio).all()


def test_models_are_freed_between_stages_unless_kept(tiny_weights: Path) -> None:
    lean = Pipeline(tiny_weights, device="cpu")
    resident: list[set[str]] = []
    for event in lean.generate(REQ):
        if isinstance(event, Stage):
            resident.append(set(lean._loaded))
    assert all(len(names) <= 1 for names in resident), resident
    assert lean._loaded == {}
    kept = Pipeline(tiny_weights, device="cpu", keep_loaded=True)
    run(kept, REQ)
    assert set(kept._loaded) == {"backbone", "superres", "decoder"}


class _DtypeRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.float64_ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                self.float64_ops.append(str(func))
        return out


def test_whole_run_creates_no_float64_tensor(tiny_weights: Path) -> None:
    pipeline = Pipeline(tiny_weights, device="cpu")
    recorder = _DtypeRecorder()
    request = SongRequest(**{**REQ.to_dict(), "max_tokens": 8})
    with recorder:  # thread-local: every stage runs on the consumer's thread, so it sees them all
        song, = songs(run(pipeline, request))
    assert song.audio.shape[1] > 0
    assert recorder.float64_ops == []


def test_truncated_prompt_is_reported(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.prompt.template
    monkeypatch.setattr(engine.prompt.template, "BACKBONE_CAP", 48)  # the real 4096 only costs time here
    monkeypatch.setattr(engine.prompt.template, "SUPERRES_CAP", 32)
    long_lyrics = "\n".join(["word " * 10] * 8)
    request = SongRequest(**{**REQ.to_dict(), "lyrics": long_lyrics, "max_tokens": 4})
    events = run(pipeline, request)
    logs = [e.text for e in events if isinstance(e, Log)]
    assert sum("Prompt too long" in text for text in logs) == 2
    song, = songs(events)
    # whole lyric lines are cut: BOS "Pop, Piano" (3) EOM EOM BOL = 7, tail 4, each line EOL + 11
    # ("word " x 10), the last (stripped) EOL + 10: 106 in all; 11 + 12 x 3 = 47 <= 48, 11 + 12 = 23 <= 32
    assert song.metadata["tokens"]["backbone_prompt"] == 47 and song.metadata["tokens"]["superres_prompt"] == 23
    assert len(song.metadata["prompt_truncated"]) == 2
    assert "dropped the last 5 of 8 lyric lines" in song.metadata["prompt_truncated"][0]


def test_progress_estimate_matches_spec() -> None:
    assert expected_tokens(2) == int(2584 * 2.8)
    assert expected_tokens(0) == int(2584 * 0.8)


def test_backbone_cap_is_upstreams_23552_whatever_the_duration(pipeline: Pipeline,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # SPEC §6: the duration token steers length; the cap is 23 552 generated tokens, not 2584 × (d + 0.8).
    import engine.pipeline as pl
    real, seen = pl.BackboneRun, []

    def capped(model, prompt_ids, **kw):
        seen.append(kw["max_new_tokens"])
        return real(model, prompt_ids, **{**kw, "max_new_tokens": 6})
    monkeypatch.setattr(pl, "BackboneRun", capped)
    for minutes in (1, 10):
        songs(run(pipeline, SongRequest(**{**REQ.to_dict(), "minutes": minutes, "max_tokens": None})))
    assert seen == [23552, 23552]


def test_stages_run_on_the_consumers_thread(pipeline: Pipeline) -> None:
    """One event stream: no stage starts a thread of its own (no bridge between threads)."""
    import threading
    seen: set[int] = set()
    for _ in pipeline.generate(SongRequest(**{**REQ.to_dict(), "max_tokens": 8})):
        seen.add(threading.active_count())
    assert seen == {threading.active_count()}
