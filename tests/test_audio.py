"""Audio and sidecar writing: formats round-trip, atomic replace, clear refusals; audio_stats."""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine import audio as audio_mod
from engine.audio import audio_stats, write_audio, write_json_atomic
from engine.errors import OutputError

SR = 44100


def tone(seconds: float = 1.0, sr: int = SR, amp: tuple[float, float] = (0.5, 0.25)) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([amp[0] * np.sin(2 * np.pi * 440 * t), amp[1] * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)


@pytest.mark.parametrize("ext, subtype, tol", [(".wav", "PCM_24", 2e-7), (".flac", "PCM_16", 4e-5)])
def test_lossless_round_trip(tmp_path: Path, ext: str, subtype: str, tol: float) -> None:
    a = tone(0.5)
    path = tmp_path / f"song{ext}"
    write_audio(path, a)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 2, a.shape[1], subtype)
    back, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR
    np.testing.assert_allclose(back.T, a, atol=tol)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


def test_mp3_round_trip(tmp_path: Path) -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3")
    a = tone(1.0)
    path = tmp_path / "song.mp3"
    write_audio(path, a)
    back, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR and back.shape[1] == 2
    assert abs(back.shape[0] - a.shape[1]) <= 1152  # one MPEG frame
    n = min(back.shape[0], a.shape[1])
    for ch in range(2):
        corr = np.corrcoef(back[2000:n - 2000, ch], a[ch, 2000:n - 2000])[0, 1]
        assert corr > 0.99


def test_other_sample_rate_and_mono(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    write_audio(path, tone(0.2, sr=22050)[:1], sample_rate=22050)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (22050, 1, 4410)


def test_clipping_is_logged_with_peak(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = tone(0.1, amp=(1.7, 0.2))
    with caplog.at_level(logging.WARNING, logger="engine.audio"):
        write_audio(tmp_path / "loud.wav", a)
    back, _ = sf.read(tmp_path / "loud.wav", dtype="float32")
    assert back.max() <= 1.0 and back.max() > 0.999 and back.min() >= -1.0
    assert "1.700" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.audio"):
        write_audio(tmp_path / "quiet.wav", tone(0.1))
    assert not caplog.text


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused_and_existing_file_untouched(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "song.wav"
    path.write_bytes(b"previous song")
    a = tone(0.1)
    a[1, 100] = bad
    with pytest.raises(OutputError, match="NaN or infinite"):
        write_audio(path, a)
    assert path.read_bytes() == b"previous song"
    with pytest.raises(OutputError):
        write_audio(tmp_path / "new.flac", a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]


@pytest.mark.parametrize("name, audio, match", [
    ("song.ogg", tone(0.1), "unknown audio format '.ogg'"),
    ("song", tone(0.1), "no extension"),
    ("song.wav", tone(0.1).T, "channels"),
    ("song.wav", np.zeros((2, 0), np.float32), "channels"),
    ("song.wav", (tone(0.1) * 1000).astype(np.int16), "float"),
])
def test_bad_requests_refused(tmp_path: Path, name: str, audio: np.ndarray, match: str) -> None:
    with pytest.raises(OutputError, match=match):
        write_audio(tmp_path / name, audio)
    assert not list(tmp_path.iterdir())


def test_missing_folder_and_directory_target(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        write_audio(tmp_path / "nowhere" / "song.wav", tone(0.1))
    (tmp_path / "taken.wav").mkdir()
    with pytest.raises(OutputError, match="taken.wav"):
        write_audio(tmp_path / "taken.wav", tone(0.1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.wav"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission"):
            write_audio(folder / "song.wav", tone(0.1))
    finally:
        folder.chmod(0o700)


def test_permission_denied_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(audio_mod.os, "open", refuse)
    with pytest.raises(OutputError, match=f"no permission to write in {tmp_path}"):
        write_audio(tmp_path / "song.wav", tone(0.1))


def test_failure_mid_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "song.flac"
    write_audio(path, tone(0.2))
    before = path.read_bytes()

    def half_write(file, data, samplerate, **kwargs):  # audio is encoded into a file object first
        file.write(b"fLaC partial")
        raise RuntimeError("Error: disk full")

    monkeypatch.setattr(audio_mod.sf, "write", half_write)
    with pytest.raises(OutputError, match="disk full"):
        write_audio(path, tone(0.3))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.flac"]


def test_mp3_unavailable_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_mod.sf, "available_formats", lambda: {"WAV": "", "FLAC": ""})
    with pytest.raises(OutputError, match="no MP3 support"):
        write_audio(tmp_path / "song.mp3", tone(0.1))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_written_file_has_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_audio(tmp_path / "song.wav", tone(0.1))
        write_json_atomic(tmp_path / "song.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "song.wav").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "song.json").stat().st_mode & 0o777 == 0o644


def test_json_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "song.json"
    write_json_atomic(path, {"seed": np.int64(7), "peak": np.float32(0.5), "codes": np.arange(3),
                             "file": tmp_path / "song.wav", "title": "Mañana",
                             "at": datetime.datetime(2025, 1, 2, 3, 4, 5), "tags": {"pop", "emo"}})
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "seed": 7, "peak": 0.5, "codes": [0, 1, 2], "file": str(tmp_path / "song.wav"), "title": "Mañana",
        "at": "2025-01-02T03:04:05", "tags": ["emo", "pop"]}
    for bad in ({"x": object()}, {"x": float("nan")}):
        with pytest.raises(OutputError, match="song.json"):
            write_json_atomic(path, bad)
        assert json.loads(path.read_text(encoding="utf-8"))["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.json"]


def test_audio_stats() -> None:
    a = tone(2.0, amp=(0.8, 0.8))
    stats = audio_stats(a)
    assert stats["seconds"] == pytest.approx(2.0) and stats["sample_rate"] == SR and stats["channels"] == 2
    assert stats["peak"] == pytest.approx(0.8, abs=1e-4)
    assert stats["rms"] == pytest.approx(0.8 / np.sqrt(2), rel=1e-3)
    assert not stats["has_nan"] and not stats["has_inf"]
    a[0, 5] = np.nan
    a[1, 9] = 3.0
    stats = audio_stats(a, sample_rate=22050)
    assert stats["has_nan"] and stats["peak"] == pytest.approx(3.0) and stats["seconds"] == pytest.approx(4.0)


def test_npy_is_written_atomically(tmp_path: Path) -> None:
    from engine.audio import write_npy_atomic
    target = tmp_path / "codes.npy"
    codes = np.arange(64 * 5, dtype=np.int64).reshape(64, 5)
    write_npy_atomic(target, codes)
    assert np.array_equal(np.load(target), codes) and sorted(p.name for p in tmp_path.iterdir()) == ["codes.npy"]
    with pytest.raises(OutputError, match="does not exist"):
        write_npy_atomic(tmp_path / "missing" / "codes.npy", codes)


def test_a_failed_write_keeps_the_os_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk says "No space left on device" (not libsndfile's "System error"); nothing is left."""
    import errno

    path = tmp_path / "song.wav"
    write_audio(path, tone(0.2))
    before = path.read_bytes()
    real_fdopen = audio_mod.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(audio_mod.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OutputError, match="No space left on device") as err:
        write_audio(path, tone(0.3))
    assert "System error" not in str(err.value) and "song.wav" in str(err.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]
