"""Playback reaches a real PortAudio device: ALSA's default PCM is a file (conftest)."""

from __future__ import annotations

import numpy as np

from conftest import ALSA_OUT


def _best_correlation(raw: bytes, expected: np.ndarray) -> float:
    """Find the played samples in the raw capture whatever the sample format written."""
    best = 0.0
    for dtype, scale in (("<f4", 1.0), ("<i2", 32768.0), ("<i4", 2**31)):
        size = np.dtype(dtype).itemsize * 2
        frames = np.frombuffer(raw[:len(raw) // size * size], dtype=dtype).reshape(-1, 2) / scale
        nz = np.flatnonzero(np.abs(frames).max(axis=1) > 1e-3)
        start = nz[0] - np.flatnonzero(np.abs(expected).max(axis=1) > 1e-3)[0] if nz.size else -1
        if start < 0 or frames.shape[0] - start < len(expected):
            continue
        got = frames[start:start + len(expected)]
        corr = np.corrcoef(got.ravel(), expected.ravel())[0, 1]
        best = max(best, float(corr))
    return best


def test_play_sends_samples_to_portaudio(qtbot, fake_window):
    from conftest import generate_one

    w = fake_window
    rec = generate_one(qtbot, w)
    ALSA_OUT.unlink(missing_ok=True)
    w.list.setCurrentIndex(w.model.index(w.model.row_of(rec.id)))
    states: list[bool] = []
    w.player.state_changed.connect(states.append)
    w.play_row(w.model.row_of(rec.id))
    assert states[:1] == [True], w.status.text()
    # the file device is not paced in real time: the whole song may already be played
    qtbot.waitUntil(lambda: states[-1:] == [False], timeout=20_000)
    assert w.player.position == w.player.duration == rec.duration_s
    import soundfile

    expected, _ = soundfile.read(str(rec.audio_path), dtype="float32")
    raw = ALSA_OUT.read_bytes()
    assert len(raw) >= expected.size * 2
    assert _best_correlation(raw, expected) > 0.99


def test_pause_seek_and_position(qtbot):
    from app.player.player import Player

    player = Player()
    frames = (np.random.default_rng(0).standard_normal((44_100 * 4, 2)) * 0.1).astype(np.float32)
    player.load_array(frames, 44_100, song_id=1)
    player.seek(2.0)
    assert abs(player.position - 2.0) < 1e-6
    player.play()
    qtbot.wait(50)
    player.pause()
    assert not player.playing and player.position > 2.0
    at = player.position
    qtbot.wait(200)
    assert player.position == at
    player.seek(99)
    assert player.position == 4.0
    player.stop()
