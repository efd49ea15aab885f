"""Inputs as a new user sends them (issue 9): what is checked is what the model gets, a lyrics
file is literal, `khala prompt` refuses what `khala generate` refuses, `khala decode` takes
any integer codes, and the versions, sizes and folder names the README states are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from engine.cli import build_parser, main
from engine.cli.common import request_from_args
from engine.errors import RequestError
from engine.request import NO_LYRICS, NO_LYRICS_LEFT, NO_META, SongRequest
from tokenizer_files import llama32_tokenizer_json

ROOT = Path(__file__).resolve().parent.parent


# -- item 2: what is checked is what the model gets ---------------------------------------------

@pytest.mark.parametrize("lyrics", ["★★★\u200b", "\u200b", "\ufeff★ \u2028 ★", "\u202a\u202c\u180e"])
def test_lyrics_that_clean_to_nothing_are_no_lyrics(lyrics: str) -> None:
    with pytest.raises(RequestError) as err:
        SongRequest(tags="Pop", lyrics=lyrics).validate()
    assert str(err.value) == NO_LYRICS_LEFT
    SongRequest(tags="Pop", lyrics=lyrics, instrumental=True).validate()  # an instrumental needs none


def test_one_rule_for_what_the_song_is() -> None:
    for fields in ({"tags": "Pop"}, {"description": "a calm song"}, {"genre": "Jazz"}):
        SongRequest(lyrics="la", **fields).validate()
    for empty in ({"tags": " ", "description": "\n", "genre": "\t"}, {"tags": ", ,"}, {"genre": "\u200b"},
                  {"description": "…!?"}):
        with pytest.raises(RequestError, match=re.escape(NO_META)):
            SongRequest(lyrics="la", **empty).validate()
    SongRequest(tags="ポップ", lyrics="la").validate()  # any script's letters count
    SongRequest(tags="80s", lyrics="la").validate()


def _error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip()


@pytest.mark.parametrize("args, message", [
    (["--tags", "Pop"], NO_LYRICS),
    (["--tags", "Pop", "--lyrics", "★★★\u200b"], NO_LYRICS_LEFT),
    (["--lyrics", "la"], NO_META),
    (["--tags", "Pop", "--instrumental", "--duration", "11"], "Duration must be a whole number of minutes"),
])
def test_prompt_refuses_what_generate_refuses(args: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    tokenizer = str(llama32_tokenizer_json())
    from_prompt = _error_line(capsys, ["prompt", "--tokenizer", tokenizer, *args])
    from_generate = _error_line(capsys, ["generate", "--weights", str(tmp_path / "none"), *args,
                                         "--out", str(tmp_path / "s.wav"), "--quiet"])
    assert from_prompt == from_generate and from_prompt.startswith(f"error: {message}")


def test_prompt_accepts_a_genre_only_song(capsys: pytest.CaptureFixture) -> None:
    assert main(["prompt", "--tokenizer", str(llama32_tokenizer_json()), "--genre", "Jazz", "--lyrics", "la"]) == 0
    assert '"backbone_text": "<|begin_of_text|>Jazz<|eom_id|>' in capsys.readouterr().out


# -- item 3: a lyrics file is literal ----------------------------------------------------------

def _args(*argv: str):
    return build_parser().parse_args(["prompt", "--tokenizer", "t.json", "--tags", "Pop", *argv])


def test_lyrics_file_keeps_backslash_n(tmp_path: Path) -> None:
    path = tmp_path / "song.txt"
    path.write_text("C:\\new folder\\n is not a line break\nsecond line\n", encoding="utf-8")
    assert request_from_args(_args("--lyrics-file", str(path))).lyrics == (
        "C:\\new folder\\n is not a line break\nsecond line\n")


def test_only_the_lyrics_argument_reads_backslash_n_as_a_line_break() -> None:
    assert request_from_args(_args("--lyrics", "one\\ntwo")).lyrics == "one\ntwo"


def test_help_says_which_lyrics_input_reads_backslash_n() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = " ".join(sub.choices["generate"].format_help().split())
    assert "a typed \\n, backslash then n, also starts a new line" in help_text
    assert "taken literally: a backslash-n in the file stays two characters" in help_text


def test_lyrics_file_over_a_megabyte_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "huge.txt"
    path.write_bytes(b"la la la\n" * 120_000)  # 1.08 MB
    line = _error_line(capsys, ["prompt", "--tokenizer", str(llama32_tokenizer_json()), "--tags", "Pop",
                                "--lyrics-file", str(path)])
    assert line == f"error: Lyrics file {path} is 1.1 MB; a lyrics file is at most 1 MB of text."


# -- item 4 (CLI): the cut is reported ---------------------------------------------------------

def test_prompt_reports_dropped_lines(capsys: pytest.CaptureFixture) -> None:
    import json

    lyrics = "\\n".join(f"line {i} of a very long song" for i in range(700))  # see test_prompt: 246 / 474 dropped
    assert main(["prompt", "--tokenizer", str(llama32_tokenizer_json()), "--tags", "Pop", "--lyrics", lyrics]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dropped_lines"] == 474 and data["backbone_ids"][-4:] == [128008, 128005, 128009, 128010]
    assert "dropped the last 246 of 700 lyric lines" in data["truncated"][0]


# -- item 8: khala decode takes any integer codes ---------------------------------------------

INTEGER_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


def _decode(tmp_path: Path, codes_file: Path, weights: Path | None = None) -> int:
    return main(["decode", "--weights", str(weights or tmp_path / "no-weights"), "--codes", str(codes_file),
                 "--out", str(tmp_path / "song.wav"), "--quiet"])


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_decode_accepts_every_integer_dtype(dtype: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    top = min(1023, np.iinfo(dtype).max)  # int8 holds 0..127, uint8 0..255
    codes = (np.arange(64 * 5).reshape(64, 5) % (top + 1)).astype(dtype)
    np.save(tmp_path / "codes.npy", codes)
    assert _decode(tmp_path, tmp_path / "codes.npy") == 1
    err = capsys.readouterr().err
    # the codes passed: what stops it is the missing model, not the codes
    assert err.startswith("error: No weights folder") and "Traceback" not in err


def test_uint16_codes_decode_as_int64_codes(tiny_weights: Path, tmp_path: Path) -> None:
    import soundfile as sf

    codes = np.random.default_rng(0).integers(0, 1024, size=(64, 3))
    np.save(tmp_path / "a.npy", codes.astype(np.int64))
    np.save(tmp_path / "b.npy", codes.astype(np.uint16))
    for name in ("a", "b"):
        assert main(["decode", "--weights", str(tiny_weights), "--codes", str(tmp_path / f"{name}.npy"),
                     "--out", str(tmp_path / f"{name}.wav"), "--quiet"]) == 0
    assert np.array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0])


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_check_codes_widens_torch_and_numpy_alike(dtype: str) -> None:
    import torch

    from engine.stages.codec import check_codes

    top = min(1023, np.iinfo(dtype).max)
    good = np.full((64, 3), top, dtype=dtype)
    check_codes(good)
    check_codes(torch.from_numpy(good))  # uint8 is not a false range error, uint16 not a crash
    if np.iinfo(dtype).max >= 1024:
        bad = good.copy()
        bad[5, 2] = 1024
        for codes in (bad, torch.from_numpy(bad)):
            with pytest.raises(RequestError, match=r"^Code 1024 at codebook 5, frame 2 is outside 0\.\.1023\.$"):
                check_codes(codes)


def _bad_codes(kind: str, path: Path) -> Path:
    if kind == "npz":
        np.savez(path.with_suffix(".npz"), codes=np.zeros((64, 4), np.int16))
        return path.with_suffix(".npz")
    if kind == "text":
        path.write_text("0 1 2 3\n")
        return path
    arrays = {"float": np.zeros((64, 4), np.float32), "bool": np.zeros((64, 4), bool),
              "uint16 4000": np.full((64, 4), 4000, np.uint16), "int8 -1": np.full((64, 4), -1, np.int8),
              "uint64 max": np.full((64, 4), 2**64 - 1, np.uint64), "shape": np.zeros((63, 4), np.int16)}
    np.save(path, arrays[kind])
    return path


@pytest.mark.parametrize("kind, message", [
    ("npz", "{path} is a .npz archive; give the codes as one .npy array (numpy.save), [64, frames] integers."),
    ("text", "{path} is not a NumPy .npy file; give [64, frames] integer codes saved with numpy.save."),
    ("float", "{path}: Codes must be integers; got float32."),
    ("bool", "{path}: Codes must be integers; got bool."),
    ("uint16 4000", "{path}: Code 4000 at codebook 0, frame 0 is outside 0..1023."),
    ("int8 -1", "{path}: Code -1 at codebook 0, frame 0 is outside 0..1023."),
    ("uint64 max", "{path}: Code 18446744073709551615 at codebook 0, frame 0 is outside 0..1023."),
    ("shape", "{path}: Codes must have shape [64, frames]; got [63, 4]."),
])
def test_decode_bad_codes_is_one_line(kind: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _bad_codes(kind, tmp_path / "codes.npy")
    assert _decode(tmp_path, path) == 1
    assert capsys.readouterr().err == f"error: {message.format(path=path)}\n"
    assert not (tmp_path / "song.wav").exists()


# -- item 12: what the README says is what Khala does ------------------------------------------

def test_version_prints_what_the_readme_promises(capsys: pytest.CaptureFixture) -> None:
    import importlib.metadata

    import engine

    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "prints the app, Python, Qt and PyTorch versions and the device songs will use" in readme
    assert main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["Khala", "Python", "Qt", "PyTorch", "Device", "System"]
    assert lines[0] == f"Khala {engine.__version__}"
    assert lines[3] == f"PyTorch {importlib.metadata.version('torch')}"


def test_one_download_size_from_the_manifest() -> None:
    from engine.weights import folder, manifest

    m = manifest.load_manifest()
    # 3,234,000,000 + 20,000 + 3,753,000,000 + 20,000 + 1,062,000,000 + 2,000 + 9,085,825 (tokenizer)
    assert m.approx_total_bytes == 8_058_127_825
    text = manifest.download_size_text(m.approx_total_bytes)
    assert text == "about 8.1 GB"
    readme = (ROOT / "README.md").read_text()
    stated = re.findall(r"(?:about|~) ?\d+(?:\.\d+)? GB", readme)
    assert stated and set(stated) == {text}, stated
    assert text in folder.weights_status(ROOT / "no-such-folder").detail
    assert folder.required_download_bytes(ROOT / "no-such-folder") == m.approx_total_bytes


@pytest.mark.parametrize("field, label", [("tags", "The tags contain"), ("description", "The description contains"),
                                          ("genre", "The genre contains"), ("lyrics", "The lyrics contain")])
def test_control_characters_are_refused_in_every_field(field: str, label: str) -> None:
    fields = {"tags": "Pop", "lyrics": "la", field: "ok\x1b[31m"}
    with pytest.raises(RequestError) as err:
        SongRequest(**fields).validate()
    assert str(err.value) == f"{label} a control character (U+001B at character 3); remove it."
    SongRequest(tags="Pop\t", description="a\r\ncalm song", lyrics="[Verse]\n\tla").validate()  # whitespace is fine
