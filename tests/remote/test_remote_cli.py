"""`khala generate --server URL`: tracks written like variations, sidecars name the server and job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from dispatcher_standin import FakeDispatcher, Scenario

import engine.remote.client as client
from engine.cli import main
from engine.song_file import SongFileError, load_codes, read_song

FAST = dict(poll_s=0.005, timeout_s=2.0, retry_s=0.3, stall_timeout_s=0.3, queue_timeout_s=2.0)


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    real = client.RemotePipeline
    monkeypatch.setattr(client, "RemotePipeline", lambda url: real(url, **FAST))


def generate(url: str, out: Path, *extra: str, quiet: bool = True) -> int:
    return main(["generate", "--server", url, "--tags", "Pop, Piano", "--instrumental", "--duration", "2",
                 "--out", str(out), *(["--quiet"] if quiet else []), *extra])


def test_two_tracks_become_song_and_song_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with FakeDispatcher() as d:
        assert generate(d.url, tmp_path / "song.wav", quiet=False) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["song-2.wav", "song-2.wav.json", "song.wav", "song.wav.json"]  # no codes from a server
    for i, name in enumerate(["song.wav", "song-2.wav"]):
        sidecar = json.loads((tmp_path / f"{name}.json").read_text())
        assert sidecar["engine"]["kind"] == "remote" and sidecar["engine"]["server"] == d.url
        assert sidecar["engine"]["track"] == i and sidecar["engine"]["job_id"] and sidecar["codes"] is None
        assert sf.info(str(tmp_path / name)).frames > 0
        with pytest.raises(SongFileError, match=r"has no saved codes \(a song made on a Khala server has none\)"):
            load_codes(read_song(tmp_path / name))
    out = capsys.readouterr()
    assert "2 songs" in out.err  # asked for one, the server makes two: said, not hidden
    assert "seed chosen by the server" in out.out + out.err and "seed None" not in out.out + out.err


def test_local_only_flags_are_refused_before_sending(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with FakeDispatcher() as d:
        assert generate(d.url, tmp_path / "s.wav", "--codes-out", str(tmp_path / "c.npy")) == 1
        assert generate(d.url, tmp_path / "s.wav", "--seed", "3") == 1
    err = capsys.readouterr().err
    assert "--codes-out cannot be used with --server" in err and "seed" in err
    assert d.bodies == [] and list(tmp_path.iterdir()) == []


def test_a_failed_job_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with FakeDispatcher(Scenario(expire_after=2)) as d:
        assert generate(d.url, tmp_path / "s.wav") == 1
    assert capsys.readouterr().err.count("error:") == 1 and list(tmp_path.iterdir()) == []
