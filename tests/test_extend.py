"""Extend a song / regenerate it from a point (SPEC §12, issue 11): the engine's continuation and `khala extend`.

The correctness gate: with greedy settings, continuing a greedy song from any cut reproduces it,
all 64 codebooks. With sampling: the kept frames' codes are the parent's, the audio before the
cut (minus the decoder halo) is the parent's sample for sample, and the rest follows the seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.cli import main
from engine.errors import KhalaError, RequestError
from engine.events import Progress, Song, drain
from engine.extend import (check_room, combine_lyrics, continuation_request, cut_frame, default_minutes,
                           extended_minutes, open_song)
from engine.pipeline import Pipeline
from engine.request import UPSTREAM_TOKEN_CAP, Continuation, SongRequest
from engine.song_file import SongFileError
from engine.stages.codec import HALO_FRAMES, decode_codes, load_decoder
from engine.stages.splice import decode_continued, first_different_frame, kept_frames

GREEDY = SongRequest(tags="Pop, Piano", lyrics="[Verse]\nhello world\nla la la", minutes=1, temperature=0,
                     top_k=1, top_k_superres=1, seed=1, max_tokens=48)
SAMPLED = SongRequest(tags="Pop, Piano", instrumental=True, minutes=1, seed=5, max_tokens=120)


def song_of(pipeline: Pipeline, request: SongRequest, continuation: Continuation | None = None) -> Song:
    (song,) = [e for e in pipeline.generate(request, continuation=continuation) if isinstance(e, Song)]
    return song


def with_(request: SongRequest, **changes) -> SongRequest:
    return SongRequest(**{**request.to_dict(), **changes})


@pytest.fixture(scope="module")
def pipeline(tiny_weights: Path, single_torch_thread) -> Pipeline:
    return Pipeline(tiny_weights, device="cpu", dtype="float32", keep_loaded=True)


@pytest.fixture(scope="module")
def greedy(pipeline: Pipeline) -> Song:
    song = song_of(pipeline, GREEDY)
    assert not song.metadata["tokens"]["hit_eos"] and song.codes.shape[1] == GREEDY.max_tokens // 2
    return song


# -- the correctness gate ------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["0", "1", "7", "half", "last"])
def test_greedy_continuation_from_any_cut_reproduces_the_song(pipeline: Pipeline, greedy: Song, where: str) -> None:
    frames = greedy.codes.shape[1]
    cut = {"half": frames // 2, "last": frames - 1}.get(where) or int(where)
    new_tokens = GREEDY.max_tokens - 2 * cut  # --max-tokens counts new tokens only
    again = song_of(pipeline, with_(GREEDY, max_tokens=new_tokens), Continuation(greedy.codes, cut, "parent.wav"))
    assert again.codes.shape == greedy.codes.shape
    assert np.array_equal(again.codes, greedy.codes)  # all 64 codebooks, prefix and new frames
    assert np.array_equal(again.audio, greedy.audio)
    meta = again.metadata
    assert meta["parent"] == {"song": "parent.wav", "cut_frame": cut, "cut_seconds": round(cut * 2048 / 44100, 3),
                              "frames": frames, "title": ""}
    assert meta["tokens"]["prefix_frames"] == cut and meta["tokens"]["generated"] == new_tokens


def test_continuing_a_capped_song_past_its_cap_is_the_longer_greedy_song(pipeline: Pipeline, greedy: Song) -> None:
    """`--at end` of a song that stopped at its max-tokens cap: the backbone goes on exactly as an
    uncapped run would; super-res keeps the song's own 64 codes for its frames."""
    frames = greedy.codes.shape[1]
    longer = song_of(pipeline, with_(GREEDY, max_tokens=GREEDY.max_tokens + 16))
    extended = song_of(pipeline, with_(GREEDY, max_tokens=16), Continuation(greedy.codes, frames, "parent.wav"))
    assert extended.codes.shape == longer.codes.shape == (64, frames + 8)
    assert np.array_equal(extended.codes[:2], longer.codes[:2])  # (q0, q1) of every frame
    assert np.array_equal(extended.codes[:, :frames], greedy.codes)  # the kept frames, all 64 codebooks
    keep = kept_frames(frames) * 2048
    assert np.array_equal(extended.audio[:, :keep], greedy.audio[:, :keep])


# -- with sampling ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sampled(pipeline: Pipeline) -> Song:
    song = song_of(pipeline, SAMPLED)
    assert song.codes.shape[1] > 40
    return song


def test_sampled_continuation_keeps_the_prefix_and_its_audio_and_follows_the_seed(pipeline: Pipeline,
                                                                                  sampled: Song) -> None:
    cut = 37  # odd; 21 frames (0.98 s) of audio before the halo
    request = with_(SAMPLED, seed=9, max_tokens=40)
    child = Continuation(sampled.codes, cut, "parent.wav")
    a, b = song_of(pipeline, request, child), song_of(pipeline, request, child)
    other = song_of(pipeline, with_(request, seed=10), child)
    assert np.array_equal(a.codes[:, :cut], sampled.codes[:, :cut])
    keep = (cut - HALO_FRAMES) * 2048
    assert np.array_equal(a.audio[:, :keep], sampled.audio[:, :keep])
    assert not np.array_equal(a.audio[:, cut * 2048:cut * 2048 + 2048], sampled.audio[:, cut * 2048:cut * 2048 + 2048])
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.audio, b.audio)  # same seed, same song
    assert not np.array_equal(a.codes[:, cut:], other.codes[:, cut:other.codes.shape[1]][:, :a.codes.shape[1] - cut])
    assert a.metadata["seed"] == 9


# decoder chunks of 96 frames overlapping 24, windows of 32 (+16 halo): the real plan's shapes, small
SMALL = dict(chunk=96, overlap=24, window=32, halo=HALO_FRAMES)


@pytest.fixture(scope="module")
def decoder(tiny_weights: Path, single_torch_thread):
    from engine.weights.folder import locate_weights
    paths = locate_weights(tiny_weights)
    return load_decoder(paths.decoder, paths.decoder_config, "cpu", torch.float32)


@pytest.mark.parametrize("parent_frames, frames, cut, seam", [
    (90, 200, 90, True),  # extend at the end: the new song has a seam (72..96) where the parent had one chunk
    (100, 230, 100, False),  # extend: the parent's last chunk (72..100) is one decoder call, the new one's is not
    (150, 90, 85, False),  # a shorter new song: its last chunk differs from the parent's
    (60, 75, 60, False),  # one chunk each: only the last decoder window's shape differs
    (170, 170, 150, False),  # same length: nothing to redo
    (120, 200, 10, False),  # a cut inside the halo: nothing of the parent is kept
])
def test_decode_continued_keeps_the_parents_audio_before_the_halo(decoder, parent_frames: int, frames: int,
                                                                  cut: int, seam: bool) -> None:
    rng = np.random.default_rng(parent_frames + frames + cut)
    parent = torch.from_numpy(rng.integers(0, 1024, (64, parent_frames)))
    codes = torch.from_numpy(rng.integers(0, 1024, (64, frames)))
    codes[:, :cut] = parent[:, :cut]
    before = decode_codes(decoder, parent, **SMALL)
    events: list[Progress] = []
    audio = drain(decode_continued(decoder, codes, parent, cut, **SMALL), events.append)
    plain = decode_codes(decoder, codes, **SMALL)
    keep = kept_frames(cut) * 2048
    assert torch.equal(audio[:, :keep], before[:, :keep])
    assert torch.equal(audio[:, keep:], plain[:, keep:])  # the rest is the new song's own decode
    assert [e.done for e in events] == list(range(1, len(events) + 1)) and events[-1].total == len(events)
    if seam:  # a seam the parent did not have, before the halo: the plain decode is not the parent's audio
        assert first_different_frame(parent_frames, frames, SMALL["chunk"], SMALL["overlap"]) < kept_frames(cut)
        assert not torch.equal(plain[:, :keep], before[:, :keep])


# -- bad input, before any model loads ---------------------------------------------------------------------
def test_bad_continuations_fail_in_plan_before_any_model_loads(tiny_weights: Path, monkeypatch) -> None:
    import engine.pipeline as pipeline_module
    monkeypatch.setattr(pipeline_module, "load_transformer", lambda *a, **k: pytest.fail("a model was loaded"))
    p = Pipeline(tiny_weights, device="cpu")
    codes = np.zeros((64, 30), np.int64)
    cases = [(Continuation(codes, 31), "cut must be a frame from 0 to 30"),
             (Continuation(codes, -1), "cut must be a frame"),
             (Continuation(np.zeros((32, 30), np.int64), 3), "integers [64, frames]"),
             (Continuation(np.full((64, 30), 2048), 3), "another model's token layout"),
             (Continuation(np.zeros((64, 30)), 3), "integers [64, frames]"),
             (Continuation(np.zeros((64, 11_776), np.int16), 11_776), "too long to continue"),
             (Continuation(np.zeros((64, 11_000), np.int16), 11_000), "at most 1,552 new tokens")]
    for continuation, expected in cases:
        request = with_(GREEDY, max_tokens=2000 if continuation.cut_frame == 11_000 else None)
        with pytest.raises(RequestError, match=expected.replace("[", r"\[").replace("]", r"\]")) as error:
            list(p.generate(request, continuation=continuation))
        assert "\n" not in str(error.value) and len(str(error.value)) < 300


def test_room_under_the_cap() -> None:
    assert check_room(0, None) == UPSTREAM_TOKEN_CAP and check_room(100, 23_352) == 23_352
    with pytest.raises(RequestError):
        check_room(100, 23_353)
    with pytest.raises(RequestError):
        check_room(UPSTREAM_TOKEN_CAP // 2, None)


def test_an_immediate_end_is_one_clear_error(pipeline: Pipeline, monkeypatch) -> None:
    """A song that ended with EOS, continued at its end, may end again at once: no song, one line."""
    import engine.stages.backbone as backbone
    # candidate 0 of every slot is EOS (BackboneRun.steps): the model ends the song at the cut
    monkeypatch.setattr(backbone.BackboneRun, "_sample", lambda self, logits: torch.zeros(
        logits.shape[0], dtype=torch.long))
    with pytest.raises(KhalaError, match="ended the song at the cut, before making any new audio"):
        list(pipeline.generate(with_(GREEDY, max_tokens=8), continuation=Continuation(np.zeros((64, 5), np.int64), 5)))


# -- the rules shared with the app -----------------------------------------------------------------------------
def test_cut_frame() -> None:
    assert cut_frame("end", 100) == cut_frame(None, 100) == cut_frame(" END ", 100) == 100
    assert cut_frame("1", 100) == 21 == math.floor(44_100 / 2048)  # frames 0..20 kept
    assert cut_frame(0, 100) == 0 and cut_frame("4.644", 100) == cut_frame("4.66", 100) == 100
    assert all(cut_frame(f * 2048 / 44_100, 11_776) == f for f in range(11_777))  # a frame's time is that frame
    for bad, message in (("-0.5", "from 0 seconds"), ("nan", "from 0 seconds"), ("inf", "from 0 seconds"),
                         ("5", "past the song's end"), ("soon", "seconds or 'end'")):
        with pytest.raises(RequestError, match=message):
            cut_frame(bad, 100)


def test_minutes_lyrics_and_request() -> None:
    assert extended_minutes(168, 1) == 3  # a 2:48 song (a "2-minute" one) + 1 minute → token 3 (3.8 min expected)
    assert extended_minutes(60, 2) == 2 and extended_minutes(1, 1) == 1 and extended_minutes(600, 3) == 10
    assert combine_lyrics("[Verse]\nold", "new line\n") == "[Verse]\nold\n\nnew line"
    assert combine_lyrics("", "new") == "new" and combine_lyrics("old", " ") == "old"
    parent = {"tags": "Rock", "lyrics": "", "instrumental": True, "minutes": 2, "temperature": 0.9, "seed": 4,
              "max_tokens": 50, "variations": 3, "top_k": "lots"}
    request = continuation_request(parent, {"lyrics": "words"}, minutes=4)
    assert (request.tags, request.lyrics, request.instrumental, request.minutes) == ("Rock", "words", False, 4)
    assert (request.seed, request.max_tokens, request.variations, request.top_k) == (None, None, 1, 80)
    assert request.temperature == 0.9
    assert continuation_request(parent, {"minutes": 7}, minutes=4).minutes == 7


# -- khala extend ----------------------------------------------------------------------------------------------
GREEDY_FLAGS = ["--tags", "Pop, Piano", "--lyrics", "hello\\nworld", "--duration", "1", "--seed", "3",
                "--temperature", "0", "--top-k", "1", "--top-k-sr", "1"]


@pytest.fixture(scope="module")
def parent_song(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parent") / "song.wav"
    assert main(["generate", "--weights", str(tiny_weights), *GREEDY_FLAGS, "--max-tokens", "32",
                 "--out", str(out), "--quiet"]) == 0
    return out


def extend(weights: Path, song: Path, out: Path, *extra: str) -> int:
    return main(["extend", "--weights", str(weights), "--song", str(song), "--out", str(out), "--quiet", *extra])


def test_extend_regenerates_from_a_time_with_the_songs_request(tiny_weights: Path, parent_song: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "again.flac"
    # the song has 16 frames (32 tokens, greedy); keeping 10 leaves 12 tokens to make it again
    assert extend(tiny_weights, parent_song, out, "--at", "0.5", "--max-tokens", "12", "--codes-out",
                  str(tmp_path / "again.npy")) == 0
    parent = json.loads(Path(f"{parent_song}.json").read_text())
    meta = json.loads(Path(f"{out}.json").read_text())
    cut = math.floor(0.5 * 44_100 / 2048)
    assert meta["parent"]["song"] == "song.wav" and meta["parent"]["cut_frame"] == cut == 10
    assert meta["parent"]["title"] == parent["title"] == "Pop · Piano"
    assert meta["title"] == "Pop · Piano (from 0:00)"  # as the app names it (0.46 s, shown to the second)
    assert meta["tokens"]["prefix_frames"] == cut and meta["tokens"]["generated"] == 12
    for field in ("tags", "lyrics", "temperature", "top_k", "top_k_superres", "minutes"):
        assert meta["request"][field] == parent["request"][field]  # --at SECONDS: the song's own length
    codes = np.load(tmp_path / "again.npy")
    assert np.array_equal(codes, np.load(parent_song.with_name("song.wav.codes.npy")))  # greedy: the same song
    audio, _ = sf.read(out)
    assert audio.shape == (codes.shape[1] * 2048, 2)


def test_extend_at_end_continues_with_given_prompt_flags(tiny_weights: Path, parent_song: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "longer.wav"
    assert extend(tiny_weights, parent_song, out, "--max-tokens", "8", "--tags", "Jazz", "--seed", "11") == 0
    meta = json.loads(Path(f"{out}.json").read_text())
    frames = np.load(parent_song.with_name("song.wav.codes.npy")).shape[1]
    assert meta["parent"]["cut_frame"] == frames and meta["tokens"]["prefix_frames"] == frames
    assert meta["request"]["tags"] == "Jazz" and meta["request"]["lyrics"] == "hello\nworld"
    assert meta["seed"] == 11 and meta["request"]["minutes"] == extended_minutes(frames * 2048 / 44100, 1)
    assert np.array_equal(np.load(f"{out}.codes.npy")[:, :frames], np.load(parent_song.with_name("song.wav.codes.npy")))


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_extend_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, parent_song: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Each checked before the weights are even looked at (the weights folder here does not exist)."""
    import shutil
    nowhere = tmp_path / "no-weights"
    work = tmp_path / "songs"
    work.mkdir()
    for name in ("song.wav", "song.wav.json", "song.wav.codes.npy"):
        shutil.copy(parent_song.with_name(name), work / name)
    song = work / "song.wav"
    sf.write(work / "plain.wav", np.zeros((2048, 2), np.float32), 44_100)
    shutil.copy(song, work / "nocodes.wav")
    (work / "nocodes.wav.json").write_text(json.dumps({**json.loads((work / "song.wav.json").read_text()),
                                                       "audio": "nocodes.wav", "codes": "nocodes.wav.codes.npy"}))
    shutil.copy(song, work / "other.wav")
    (work / "other.wav.json").write_text(json.dumps({**json.loads((work / "song.wav.json").read_text()),
                                                     "audio": "other.wav", "codes": "other.wav.codes.npy"}))
    np.save(work / "other.wav.codes.npy", np.full((64, 16), 1500, np.int16))  # another model's layout
    shutil.copy(song, work / "long.wav")
    (work / "long.wav.json").write_text(json.dumps({**json.loads((work / "song.wav.json").read_text()),
                                                    "audio": "long.wav", "codes": "long.wav.codes.npy"}))
    np.save(work / "long.wav.codes.npy", np.zeros((64, 11_776), np.int16))  # a song at the 23 552-token cap
    before = sorted(p.name for p in work.iterdir())
    cases = [("plain.wav", [], "no usable Khala sidecar"),
             ("nocodes.wav", [], "has no saved codes"),
             ("other.wav", [], "not this model's token layout"),
             ("long.wav", [], "too long to continue"),
             ("long.wav", ["--at", "500", "--max-tokens", "3000"], "at most 2,020 new tokens"),
             ("song.wav", ["--at", "60"], "past the song's end"),
             ("song.wav", ["--at=-1"], "from 0 seconds"),
             ("song.wav", ["--at", "nan"], "from 0 seconds"),
             ("song.wav", ["--minutes", "11"], "Duration must be"),
             ("song.wav", ["--temperature", "3"], "Temperature must be"),
             ("missing.wav", [], "not found")]
    for name, extra, expected in cases:
        assert extend(nowhere, work / name, work / "new.wav", *extra) == 1, name
        assert expected in one_error_line(capsys), (name, extra)
    assert extend(nowhere, song, song) == 1 and "the song itself" in one_error_line(capsys)
    assert sorted(p.name for p in work.iterdir()) == before


def test_extend_help_lists_the_issue_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["extend", "--help"])
    text = capsys.readouterr().out
    for flag in ("--weights", "--song", "--at", "--minutes", "--tags", "--description", "--genre", "--lyrics",
                 "--lyrics-file", "--instrumental", "--temperature", "--top-k", "--top-k-sr", "--seed",
                 "--max-tokens", "--device", "--dtype", "--out", "--codes-out", "--quiet"):
        assert flag in text


def test_open_song_and_default_minutes(parent_song: Path) -> None:
    source = open_song(parent_song)
    assert source.codes.dtype == np.int64 and source.codes.shape == (64, 16)
    assert default_minutes(source, 5) == source.request["minutes"] == 1  # regenerate: the song's own
    assert default_minutes(source, 16) == extended_minutes(source.seconds, 1)
    with pytest.raises(SongFileError):
        open_song(parent_song.with_name("nothing.wav"))
