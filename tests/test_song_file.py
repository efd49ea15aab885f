"""engine.song_file: one song = audio + sidecar + codes, written as one recoverable unit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio import read_tags
from engine.errors import OutputError
from engine.events import Song
from engine.request import SongRequest
from engine.song_file import (SIDECAR_FORMAT, SongFileError, check_output, codes_path, find_songs, load_codes,
                              read_song, recover, sidecar_path, write_song)

ROOT = Path(__file__).resolve().parent.parent
REQUEST = SongRequest(tags="Pop, Piano", lyrics="la la\nlo lo", seed=7)


def song(frames: int = 3, variation: int = 0, value: float = 0.1) -> Song:
    rng = np.random.default_rng(frames)
    meta = {"request": {**REQUEST.to_dict()}, "seed": 7, "variation": variation, "timings_s": {"backbone": 1.5},
            "tokens": {"audio_frames": frames}}
    return Song(audio=np.full((2, frames * 2048), value, np.float32), sample_rate=44_100,
                codes=rng.integers(0, 1024, (64, frames)), metadata=meta, variation=variation)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_song_is_audio_sidecar_and_int16_codes(tmp_path: Path) -> None:
    s = song()
    saved = write_song(s, tmp_path / "song.wav")
    assert listing(tmp_path) == ["song.wav", "song.wav.codes.npy", "song.wav.json"]
    sidecar = json.loads((tmp_path / "song.wav.json").read_text())
    assert sidecar["format"] == SIDECAR_FORMAT and sidecar["audio"] == "song.wav"
    assert sidecar["codes"] == "song.wav.codes.npy" and sidecar["title"] == "Pop · Piano"
    assert sidecar["seed"] == 7 and sidecar["timings_s"] == {"backbone": 1.5} and sidecar["sample_rate"] == 44_100
    codes = np.load(tmp_path / "song.wav.codes.npy")
    assert codes.dtype == np.int16 and np.array_equal(codes, s.codes)
    assert saved.sidecar == sidecar and saved.codes_path == tmp_path / "song.wav.codes.npy"


def test_two_formats_in_one_folder_keep_two_sidecars(tmp_path: Path) -> None:
    write_song(song(3), tmp_path / "song.wav")
    write_song(song(5), tmp_path / "song.mp3")
    wav, mp3 = read_song(tmp_path / "song.wav"), read_song(tmp_path / "song.mp3")
    assert wav.sidecar["audio"] == "song.wav" and mp3.sidecar["audio"] == "song.mp3"
    assert load_codes(wav).shape == (64, 3) and load_codes(mp3).shape == (64, 5)


@pytest.mark.parametrize("ext", [".wav", ".flac", ".mp3"])
def test_the_audio_file_carries_title_tags_lyrics_and_seed(tmp_path: Path, ext: str) -> None:
    write_song(song(), tmp_path / f"song{ext}")
    tags = read_tags(tmp_path / f"song{ext}")
    assert tags["title"] == "Pop · Piano" and tags["lyrics"] == "la la\nlo lo" and tags["seed"] == "7"
    assert "Pop, Piano" in tags["genre"] and tags["artist"] == "Khala"
    assert sf.info(str(tmp_path / f"song{ext}")).frames >= 3 * 2048  # still plain audio to libsndfile


def test_the_longest_legal_name_works(tmp_path: Path) -> None:
    name = "a" * 251 + ".wav"  # 255 bytes
    check_output(tmp_path / name)
    saved = write_song(song(), tmp_path / name)
    assert saved.audio_path.name == name
    assert all(len(n.encode()) <= 255 for n in listing(tmp_path))
    assert sidecar_path(saved.audio_path).is_file() and codes_path(saved.audio_path).is_file()
    assert load_codes(read_song(saved.audio_path)).shape == (64, 3)


def test_a_name_over_the_limit_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="256 bytes"):
        check_output(tmp_path / ("a" * 252 + ".wav"))
    with pytest.raises(OutputError, match="variation 2"):
        check_output(tmp_path / ("a" * 250 + ".wav"), variations=2)  # its -2 name is 256 bytes
    assert listing(tmp_path) == []


def test_check_output_knows_what_can_be_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OutputError, match="unknown audio format '.ogg'"):
        check_output(tmp_path / "s.ogg")
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "nope" / "s.wav")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is not a folder"):
        check_output(tmp_path / "file" / "s.wav")
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        check_output(tmp_path / "dir.wav")
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(OutputError, match="Not enough free space"):
        check_output(tmp_path / "s.wav", seconds=180.0)  # ~48 MB of 24-bit WAV, 1 MB free
    check_output(tmp_path / "s.mp3", seconds=10.0)  # 400 kB fits
    assert listing(tmp_path) == ["dir.wav", "file"]


def test_free_space_below_a_megabyte_is_said_in_kilobytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9 - 148_000, 148_000))
    with pytest.raises(OutputError, match=r"about [1-9]\d\d kB needed, 148 kB free\."):
        check_output(tmp_path / "s.wav", seconds=1.0)  # ~265 kB of 24-bit stereo WAV


@pytest.mark.parametrize("blocker", ["s.wav.json", "s.wav.codes.npy", "s-2.wav", "s-2.wav.json"])
def test_a_folder_in_place_of_any_file_of_the_song_is_refused_before_any_work(tmp_path: Path, blocker: str) -> None:
    # a folder named like the sidecar once let a whole run finish, then failed the save with a
    # traceback, leaving the audio, the codes and our journal behind
    (tmp_path / blocker).mkdir()
    with pytest.raises(OutputError, match=f"{blocker}: it is a folder"):
        check_output(tmp_path / "s.wav", variations=2)
    assert listing(tmp_path) == [blocker]


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_writability_is_proven_by_a_probe_file() -> None:
    """Even as root, /proc takes no files: the probe says so before any model runs."""
    with pytest.raises(OutputError, match="proc"):
        check_output(Path("/proc/khala-song.wav"))


def test_taking_a_free_name_never_overwrites(tmp_path: Path) -> None:
    first = write_song(song(3), tmp_path / "song.wav", overwrite=False)
    second = write_song(song(4), tmp_path / "song.wav", overwrite=False)
    assert (first.audio_path.name, second.audio_path.name) == ("song.wav", "song-2.wav")
    assert load_codes(read_song(first.audio_path)).shape == (64, 3)


def test_saves_at_one_instant_get_their_own_names(tmp_path: Path) -> None:
    """Eight writers racing for one name, five times over: every song is whole, under its own name."""
    for round_ in range(5):
        folder = tmp_path / f"r{round_}"
        folder.mkdir()
        results: list[Path] = []
        barrier = threading.Barrier(8)

        def save(frames: int) -> None:
            barrier.wait()
            results.append(write_song(song(frames), folder / "same.wav", overwrite=False).audio_path)

        threads = [threading.Thread(target=save, args=(n,)) for n in range(2, 10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(results)) == 8
        assert sorted(load_codes(read_song(p)).shape[1] for p in results) == list(range(2, 10))
        assert not [n for n in listing(folder) if n.startswith(".")]


# A save killed with SIGKILL-like os._exit after its k-th file-system step: the next start's
# recover() leaves nothing or the complete song, never a part.
_KILLED_SAVE = """
import os, sys, numpy as np
sys.path.insert(0, {root!r})
import engine.song_file as sfm
from engine.events import Song
steps = [0]
def counted(fn):
    def wrapper(*a, **k):
        steps[0] += 1
        if steps[0] > {k}:
            os._exit(9)
        return fn(*a, **k)
    return wrapper
sfm.write_temp = counted(sfm.write_temp)
sfm.os.replace = counted(os.replace)
meta = {{"request": {{"tags": "Pop"}}, "seed": 1}}
sfm.write_song(Song(np.full((2, 4096), 0.1, np.float32), 44100, np.zeros((64, 2), np.int64), meta),
               {path!r}, overwrite={overwrite})
"""


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_kill_at_any_step_leaves_nothing_or_the_whole_song(tmp_path: Path, overwrite: bool) -> None:
    outcomes = set()
    for k in range(0, 10):  # the claim, 3 temp files, the commit record, its rename, 3 renames: 9 steps
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        if overwrite:
            write_song(song(1, value=0.2), folder / "song.wav")  # an older song of that name
        code = _KILLED_SAVE.format(root=str(ROOT), k=k, path=str(folder / "song.wav"), overwrite=overwrite)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode in (0, 9), proc.stderr
        report = recover(folder)
        names = listing(folder)
        assert not [n for n in names if n.startswith(".")], (k, names)
        if overwrite and names and read_song(folder / "song.wav").sidecar["seed"] == 7:
            outcomes.add("old")  # nothing of the new song: the old one is intact
            assert load_codes(read_song(folder / "song.wav")).shape == (64, 1)
            continue
        if not names:
            outcomes.add("nothing")
            continue
        outcomes.add("new")
        assert names == ["song.wav", "song.wav.codes.npy", "song.wav.json"], (k, names)
        assert read_song(folder / "song.wav").sidecar["seed"] == 1
        assert load_codes(read_song(folder / "song.wav")).shape == (64, 2)
        assert sf.info(str(folder / "song.wav")).frames == 4096
        if proc.returncode == 9:
            assert report.completed == [folder / "song.wav"]  # finished from the journal
    assert outcomes == ({"old", "new"} if overwrite else {"nothing", "new"})


def test_recover_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".khala-{int(dead.stdout)}-0123abcd.tmp"
    live = tmp_path / f".khala-{os.getpid()}-0123abcd.tmp"
    orphan_part = tmp_path / ".khala-0123456789abcdef.audio.tmp"
    old_writer = tmp_path / ".song.wav.a1b2c3d4.tmp"  # left by the writer before the journal
    fresh_other = tmp_path / ".notes.txt.a1b2c3d4.tmp"
    user_file = tmp_path / "mine.tmp"
    for p in (stale, live, orphan_part, old_writer, fresh_other, user_file):
        p.write_bytes(b"x")
    os.utime(old_writer, (time.time() - 7200, time.time() - 7200))
    report = recover(tmp_path)
    assert sorted(p.name for p in report.removed) == sorted([stale.name, orphan_part.name, old_writer.name])
    assert listing(tmp_path) == sorted([live.name, fresh_other.name, user_file.name])


def test_read_song_errors_are_one_clear_line(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "plain.wav"), np.zeros((4096, 2)), 44_100)
    with pytest.raises(SongFileError, match="no usable Khala sidecar"):
        read_song(tmp_path / "plain.wav")
    saved = write_song(song(), tmp_path / "s.wav")
    saved.codes_path.unlink()
    with pytest.raises(SongFileError, match="no saved codes"):
        load_codes(read_song(saved.audio_path))
    np.save(saved.codes_path, np.zeros((32, 3), np.int16))
    with pytest.raises(SongFileError, match=r"expected integers \[64, frames\]"):
        load_codes(read_song(saved.audio_path))
    np.save(saved.codes_path, np.full((64, 3), 4000, np.int16))
    with pytest.raises(SongFileError, match="outside 0..1023"):
        load_codes(read_song(saved.audio_path))
    saved.codes_path.write_bytes(bytes(range(256)) * 8)  # not .npy: np.load alone would call it a pickle
    with pytest.raises(SongFileError, match=r"cannot be read: it is not a NumPy \.npy file\.$"):
        load_codes(read_song(saved.audio_path))
    np.save(saved.codes_path, np.array([None] * 64, dtype=object).reshape(64, 1), allow_pickle=True)
    with pytest.raises(SongFileError, match=r"cannot be read: it holds Python objects, not integer codes\.$"):
        load_codes(read_song(saved.audio_path))


def test_a_song_renamed_with_its_companions_can_still_be_extended(tmp_path: Path) -> None:
    # README: FILE.json and FILE.codes.npy beside FILE; renaming all three (Finder, mv) kept the
    # old codes name inside the sidecar, and extend said "no saved codes"
    saved = write_song(song(), tmp_path / "take.wav")
    for old, new in [(saved.audio_path, "final.wav"), (sidecar_path(saved.audio_path), "final.wav.json"),
                     (saved.codes_path, "final.wav.codes.npy")]:
        old.rename(tmp_path / new)
    assert load_codes(read_song(tmp_path / "final.wav")).shape == (64, 3)


def test_a_deeply_nested_sidecar_is_a_damaged_one(tmp_path: Path) -> None:
    # json.loads raised RecursionError: `khala extend` printed a traceback, and a library scan
    # (find_songs, at every app launch) would stop at such a file
    saved = write_song(song(), tmp_path / "s.wav")
    write_song(song(), tmp_path / "t.wav")
    sidecar_path(saved.audio_path).write_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(SongFileError, match="s.wav.json is damaged"):
        read_song(saved.audio_path)
    assert [found.audio_path.name for found in find_songs(tmp_path)] == ["t.wav"]


def test_legacy_sidecars_are_still_read_and_found(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "old.wav"), np.zeros((4096, 2)), 44_100)
    (tmp_path / "old.json").write_text(json.dumps({"title": "Old", "file": "old.wav", "seed": 3,
                                                   "metadata": {"timings_s": {"decode": 1.0}}}))
    write_song(song(), tmp_path / "new.wav")
    sf.write(str(tmp_path / "stray.wav"), np.zeros((4096, 2)), 44_100)
    found = {s.audio_path.name: s for s in find_songs(tmp_path)}
    assert set(found) == {"old.wav", "new.wav"}
    assert found["old.wav"].title == "Old" and found["old.wav"].sidecar["timings_s"] == {"decode": 1.0}
