"""Rough previews (issue 15, SPEC §12): when they come, what they hold, what they cost and what they
must never change; `khala generate --preview-out` rewrites its file atomically."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.errors import Cancelled, NonFiniteError
from engine.events import BACKBONE, LOAD_SUPERRES, CancelToken, Log, Preview, Progress, Song, Stage
from engine.request import SongRequest
from engine.stages import preview as preview_mod
from engine.stages.codec import HALO_FRAMES, decode_coarse
from engine.stages.preview import piece_frames

HOP = 2048
REQUEST = SongRequest(tags="Pop", instrumental=True, minutes=1, seed=5, max_tokens=400)
EVERY_S = 0.5  # 11 frames: several previews in the tiny model's ~100-frame song


@pytest.fixture(scope="module")
def pipeline(tiny_weights: Path, single_torch_thread):
    from engine.pipeline import Pipeline

    return Pipeline(tiny_weights, device="cpu", keep_loaded=True)


@pytest.fixture()
def no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models decode slower than they write: without a limit, previews are deterministic."""
    monkeypatch.setattr(preview_mod, "PREVIEW_BUDGET", 1.0)


def run(pipeline, request: SongRequest = REQUEST, **options) -> list:
    return list(pipeline.generate(request, CancelToken(), **options))


def previews(events: list) -> list[Preview]:
    return [e for e in events if isinstance(e, Preview)]


def only_song(events: list) -> Song:
    songs = [e for e in events if isinstance(e, Song)]
    assert len(songs) == 1
    return songs[0]


def test_previews_come_during_the_backbone_and_end_with_the_whole_rough_song(pipeline, no_budget) -> None:
    events = run(pipeline, preview_every=EVERY_S)
    names = [e.name if isinstance(e, Stage) else type(e).__name__ for e in events]
    start, end = names.index(BACKBONE), names.index(LOAD_SUPERRES)
    shown = previews(events)
    at = [i for i, name in enumerate(names) if name == "Preview"]
    assert len(shown) >= 3 and all(start < i < end for i in at)
    # previews interleave with the backbone's progress, not all after it
    last_progress = max(i for i, e in enumerate(events) if isinstance(e, Progress) and e.stage == BACKBONE)
    assert names.index("Preview") < last_progress
    frames = [p.frames for p in shown]
    assert frames == sorted(set(frames))
    assert all(p.frames - q.frames >= round(EVERY_S * 44_100 / HOP) for q, p in zip(shown, shown[1:-1]))
    song = only_song(events)
    final = shown[-1]
    assert final.frames == song.codes.shape[1] == song.metadata["tokens"]["audio_frames"]
    for p in shown:
        assert p.audio.dtype == np.float32 and p.audio.shape == (2, p.frames * HOP) and p.sample_rate == 44_100
        assert p.variation == 0
    assert np.isfinite(final.audio).all() and np.abs(final.audio).max() > 0
    assert song.metadata["timings_s"]["preview_final"] >= 0


def test_pieces_join_exactly_and_nothing_sent_is_rewritten(pipeline, no_budget) -> None:
    """Each piece has its context on both sides: the whole preview is one decode of the coarse codes."""
    events = []
    copies = []
    for event in pipeline.generate(REQUEST, CancelToken(), preview_every=EVERY_S):
        events.append(event)
        if isinstance(event, Preview):
            copies.append(event.audio.copy())
    shown = previews(events)
    song = only_song(events)
    whole = decode_coarse(pipeline._load("decoder"), torch.from_numpy(song.codes[:2].T.astype(np.int64)))
    np.testing.assert_allclose(shown[-1].audio, whole.numpy(), atol=1e-6)
    for sent, copy in zip(shown, copies):
        np.testing.assert_array_equal(sent.audio, copy)  # later pieces never touch what was sent
        np.testing.assert_array_equal(copy, shown[-1].audio[:, :copy.shape[1]])
    assert not shown[0].audio.flags.writeable
    assert shown[-1].audio.T.flags.c_contiguous  # [n, 2] for a player, without a copy


def test_previews_do_not_change_the_song(pipeline, no_budget) -> None:
    plain = only_song(run(pipeline))
    with_previews = only_song(run(pipeline, preview_every=EVERY_S))
    np.testing.assert_array_equal(plain.codes, with_previews.codes)
    np.testing.assert_array_equal(plain.audio, with_previews.audio)
    assert "preview_final" not in plain.metadata["timings_s"]


def test_the_budget_holds_previews_back_and_the_end_catches_up(pipeline, monkeypatch) -> None:
    monkeypatch.setattr(preview_mod, "PREVIEW_BUDGET", 1e-9)
    events = run(pipeline, preview_every=EVERY_S)
    last_progress = max(i for i, e in enumerate(events) if isinstance(e, Progress) and e.stage == BACKBONE)
    shown = [i for i, e in enumerate(events) if isinstance(e, Preview)]
    assert shown and min(shown) > last_progress
    assert events[shown[-1]].frames == only_song(events).codes.shape[1]


@pytest.mark.parametrize("ready, allowance, spf, expected", [
    (10, 100.0, 0.01, 0),  # under min_piece: wait
    (200, 100.0, 0.01, 200),  # plenty of budget: everything ready
    (2000, 100.0, 0.01, 2000),
    (200, 1.0, 0.01, 79),  # cut to what the budget allows: 1 s / (0.9 · 0.01 s) = 111, less 2 × 16 of context
    (2000, 9.01, 0.01, 905),  # 1001 frames' worth: 3 windows of 384 (6 × 16 context) leave 905; 4 would leave 873
    (200, 0.2, 0.01, 0),  # what it allows is under min_piece
    (200, 0.0, 0.01, 0),
])
def test_piece_size_follows_the_budget(ready: int, allowance: float, spf: float, expected: int) -> None:
    assert piece_frames(ready, allowance, spf, min_piece=11, budget=0.1, halo=16, window=384) == expected


def test_the_budget_bounds_the_share_of_time_spent(tiny_weights: Path, monkeypatch) -> None:
    """A fake clock: the backbone takes 10 ms a frame, the decoder 20 ms; previews stay under 12 %."""
    from engine.pipeline import Pipeline

    decoder = Pipeline(tiny_weights, device="cpu")._load("decoder")
    now = [0.0]
    real_decode = preview_mod.decode_coarse

    def slow_decode(dec, coarse, *, start=0, stop=None, **kw):
        stop = coarse.shape[0] if stop is None else stop
        now[0] += 0.02 * (stop - start + 2 * HALO_FRAMES)
        return real_decode(dec, coarse, start=start, stop=stop, **kw)

    monkeypatch.setattr(preview_mod, "decode_coarse", slow_decode)
    p = preview_mod.Previewer(decoder, 0.5, capacity_frames=8, budget=0.12, clock=lambda: now[0])
    list(p.warm_up())
    p.start()
    coarse = torch.randint(0, 1024, (2000, 2))
    sent = []
    for frames in range(4, 2001, 4):
        now[0] += 0.04  # 8 tokens = 4 frames at 10 ms a frame
        sent += [e for e in p.maybe(frames, lambda f=frames: coarse[:f]) if isinstance(e, Preview)]
    assert sent and p.spent <= 0.12 * now[0] + 1e-9
    assert 0.5 * 0.12 * now[0] < p.spent  # and it does use its budget
    before = p.frames
    sent += list(p.final(coarse))
    assert before < 2000 and sent[-1].frames == 2000 and sent[-1].audio.shape == (2, 2000 * HOP)


def test_a_non_finite_preview_turns_previews_off_not_the_song(pipeline, no_budget, monkeypatch) -> None:
    def broken(*a, **k):
        raise NonFiniteError("decode", "frames 0..9", "float32")

    monkeypatch.setattr(preview_mod, "decode_coarse", broken)
    events = run(pipeline, preview_every=EVERY_S)
    monkeypatch.undo()
    warnings = [e.text for e in events if isinstance(e, Log) and e.level == "warning"]
    assert previews(events) == [] and len(warnings) == 1 and "previews turned off" in warnings[0]
    np.testing.assert_array_equal(only_song(events).codes, only_song(run(pipeline)).codes)


def test_a_coarse_decode_stops_at_a_cancel(pipeline) -> None:
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        decode_coarse(pipeline._load("decoder"), torch.zeros(40, 2, dtype=torch.long), cancel=cancel)
    with pytest.raises(ValueError):
        decode_coarse(pipeline._load("decoder"), torch.zeros(40, 2, dtype=torch.long), start=40)


# -- the CLI ---------------------------------------------------------------------------------------
def _cli_args(tiny_weights: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["generate", "--weights", str(tiny_weights), "--tags", "Pop", "--instrumental", "--duration", "1",
            "--seed", "5", "--max-tokens", "400", "--quiet", "--out", str(tmp_path / "s.wav"), *extra]


def test_preview_out_is_replaced_whole_each_time(tiny_weights: Path, tmp_path: Path, no_budget, monkeypatch) -> None:
    """Every version of the file appears by one rename of a complete temporary file; a reader polling the
    file meanwhile only ever reads whole WAV files; the last version is the whole rough song."""
    from engine.cli import main

    rough = tmp_path / "rough.wav"
    versions: list[np.ndarray] = []
    real_replace, real_open = os.replace, os.open
    opened_in_place: list[str] = []

    def replace(src, dst):
        if Path(dst) == rough:
            versions.append(sf.read(str(src), dtype="float32", always_2d=True)[0])
        return real_replace(src, dst)

    def spy_open(path, flags, *a, **k):
        if Path(path) == rough and flags & (os.O_WRONLY | os.O_RDWR):
            opened_in_place.append(str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "open", spy_open)
    seen: list[int] = []
    bad: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            existed = rough.exists()
            try:
                data, rate = sf.read(str(rough), dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                if existed:
                    bad.append(repr(exc))
                continue
            if rate != 44_100 or len(data) % HOP or not len(data):
                bad.append(f"{len(data)} frames at {rate} Hz")
            seen.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert main(_cli_args(tiny_weights, tmp_path, "--preview-out", str(rough), "--preview-every", str(EVERY_S))) == 0
    finally:
        done.set()
        thread.join()
    import json

    frames = json.loads((tmp_path / "s.wav.json").read_text())["tokens"]["audio_frames"]
    assert len(versions) >= 3 and not opened_in_place and not bad
    lengths = [len(v) for v in versions]
    assert lengths == sorted(set(lengths)) and lengths[-1] == frames * HOP
    assert all(n % HOP == 0 for n in lengths)
    final = sf.read(str(rough), dtype="float32", always_2d=True)[0]
    np.testing.assert_array_equal(final, versions[-1])
    for v in versions:  # each version is the start of the next: the song so far
        np.testing.assert_array_equal(v, final[:len(v)])
    assert all(n in lengths for n in seen)


@pytest.mark.parametrize("name", ["s.wav", "s-2.wav", "./s-2.wav"])
def test_preview_out_may_not_be_one_of_the_songs_files(tiny_weights: Path, tmp_path: Path, name: str, capsys) -> None:
    from engine.cli import main

    args = _cli_args(tiny_weights, tmp_path, "--variations", "2", "--codes-out", str(tmp_path / "codes.npy"),
                     "--preview-out", str(tmp_path / name))
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "one of the song's own files" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
