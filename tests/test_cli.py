"""`khala generate / prompt / decode`: outputs, and one clear message with no partial file on bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.cli import main

BASE = ["--tags", "Pop, Piano", "--lyrics", "hello\\nworld", "--duration", "1", "--seed", "3", "--max-tokens", "16"]


def generate(weights: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--weights", str(weights), *BASE, "--out", str(out), "--quiet", *extra])


def test_generate_writes_audio_sidecar_and_codes(tiny_weights: Path, tmp_path: Path) -> None:
    out, codes_out = tmp_path / "song.wav", tmp_path / "codes.npy"
    assert generate(tiny_weights, out, "--codes-out", str(codes_out)) == 0
    audio, rate = sf.read(out, always_2d=True)
    codes = np.load(codes_out)
    beside = np.load(tmp_path / "song.wav.codes.npy")
    assert rate == 44_100 and audio.shape == (codes.shape[1] * 2048, 2)
    assert codes.dtype == np.int16 and codes.shape[0] == 64 and 0 <= codes.min() and codes.max() <= 1023
    assert np.array_equal(codes, beside) and beside.dtype == np.int16
    meta = json.loads((tmp_path / "song.wav.json").read_text())
    assert meta["audio"] == "song.wav" and meta["codes"] == "song.wav.codes.npy" and meta["seed"] == 3
    assert meta["format"] == "khala-song/1" and meta["title"] == "Pop · Piano"
    assert meta["request"]["tags"] == "Pop, Piano" and meta["request"]["lyrics"] == "hello\nworld"
    assert {"backbone", "superres", "decode"} <= set(meta["timings_s"]) and meta["versions"]["torch"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npy", "song.wav", "song.wav.codes.npy",
                                                           "song.wav.json"]


def test_decode_reproduces_generate(tiny_weights: Path, tmp_path: Path) -> None:
    assert generate(tiny_weights, tmp_path / "a.flac", "--codes-out", str(tmp_path / "a.npy")) == 0
    assert main(["decode", "--weights", str(tiny_weights), "--codes", str(tmp_path / "a.npy"),
                 "--out", str(tmp_path / "b.flac"), "--quiet"]) == 0
    a, _ = sf.read(tmp_path / "a.flac")
    b, _ = sf.read(tmp_path / "b.flac")
    assert np.array_equal(a, b)


def test_variations_get_numbered_files(tiny_weights: Path, tmp_path: Path) -> None:
    assert generate(tiny_weights, tmp_path / "s.wav", "--variations", "2") == 0
    assert {p.name for p in tmp_path.iterdir()} == {"s.wav", "s.wav.json", "s.wav.codes.npy",
                                                     "s-2.wav", "s-2.wav.json", "s-2.wav.codes.npy"}
    assert json.loads((tmp_path / "s-2.wav.json").read_text())["seed"] == 4


def test_prompt_json(tiny_weights: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["prompt", "--weights", str(tiny_weights), "--tags", "Pop", "--instrumental",
                 "--duration", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"backbone_text", "backbone_ids", "superres_text", "superres_ids", "truncated",
                         "dropped_lines"}
    assert data["backbone_text"] == ("<|begin_of_text|>Pop<|eom_id|>Instrumental<|eom_id|>"
                                     "<|reserved_special_token_3|><|eot_id|><|python_tag|>")
    assert data["backbone_ids"][0] == 128000 and data["backbone_ids"][-3:] == [128011, 128009, 128010]
    assert data["superres_ids"] == data["backbone_ids"] and data["truncated"] == [] and data["dropped_lines"] == 0


def _damage_truncate(folder: Path) -> str:
    path = folder / "khala_backbone.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "khala_backbone.safetensors"


def _damage_remove(folder: Path) -> str:
    (folder / "decoder_weights.pt").unlink()
    return "decoder_weights.pt"


def _damage_shape(folder: Path) -> str:
    from safetensors.torch import load_file, save_file
    path = folder / "khala_superres.safetensors"
    tensors = load_file(path)
    tensors["norm.weight"] = tensors["norm.weight"][:-1].clone()
    save_file(tensors, path)
    return "norm.weight"


def _damage_config(folder: Path) -> str:
    path = folder / "backbone_megatron_args.json"
    args = json.loads(path.read_text())
    args["normalization"] = "LayerNorm"
    path.write_text(json.dumps(args))
    return "normalization"


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_remove, _damage_shape, _damage_config])
def test_damaged_weights_give_one_clear_error(damage, tiny_weights_copy: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    word = damage(tiny_weights_copy)
    out = tmp_path / "out" / "song.wav"
    out.parent.mkdir()
    assert generate(tiny_weights_copy, out) == 1
    err = capsys.readouterr().err
    assert "error:" in err and word in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("args, word", [
    (["--tags", "", "--lyrics", "x"], "one tag, a description or a genre"),
    (["--tags", "Pop", "--lyrics", "x", "--duration", "11"], "Duration"),
    (["--tags", "Pop", "--lyrics-file", "/nonexistent/lyrics.txt"], "lyrics.txt"),
    (["--tags", "Pop", "--instrumental", "--temperature", "3"], "Temperature"),
])
def test_bad_requests_fail_before_loading(args: list[str], word: str, tiny_weights: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "song.wav"
    assert main(["generate", "--weights", str(tiny_weights), *args, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert word in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("target, word", [("missing-dir/song.wav", "does not exist"), ("song.ogg", ".wav")])
def test_unwritable_output_fails_before_loading(target: str, word: str, tiny_weights: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert generate(tiny_weights, tmp_path / target) == 1
    assert word in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder(tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    assert generate(tiny_weights, folder / "song.wav") == 1
    assert "not writable" in capsys.readouterr().err


def test_real_process_exit_code_and_message(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--weights", str(tmp_path / "nope"),
                           "--tags", "Pop", "--instrumental", "--out", str(tmp_path / "s.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.wav").exists()


@pytest.mark.parametrize("codes, word", [(np.zeros((63, 4), dtype=np.int64), "shape"),
                                         (np.zeros((64, 4), dtype=np.float32), "integers"),
                                         (np.full((64, 4), 1024, dtype=np.int64), "outside 0..1023")])
def test_decode_refuses_bad_codes_before_loading(codes: np.ndarray, word: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "codes.npy", codes)
    out = tmp_path / "song.wav"
    assert main(["decode", "--weights", str(tmp_path / "no-weights"), "--codes", str(tmp_path / "codes.npy"),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert word in err and "codes.npy" in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("flag, name", [("decode --out", "a" * 252 + ".wav"), ("generate --codes-out", "c" * 252 + ".npy")])
def test_an_output_name_over_the_file_system_limit_is_one_line(flag: str, name: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    # the 256-byte name once raised OSError [Errno 36] from Path.is_dir(): a traceback
    np.save(tmp_path / "codes.npy", np.zeros((64, 2), dtype=np.int64))
    if flag.startswith("decode"):
        argv = ["decode", "--weights", str(tmp_path / "no-weights"), "--codes", str(tmp_path / "codes.npy"),
                "--out", str(tmp_path / name)]
    else:
        argv = ["generate", "--weights", str(tmp_path / "no-weights"), "--tags", "Pop", "--instrumental",
                "--out", str(tmp_path / "s.wav"), "--codes-out", str(tmp_path / name)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot write") and "256 bytes" in err and len(err) < 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npy"]


@pytest.mark.parametrize("argv", [
    ["generate", "--tags", "Pop", "--lyrics-file", "{long}.txt", "--out", "{tmp}/s.wav"],
    ["generate", "--weights", "{tmp}/{long}", "--tags", "Pop", "--instrumental", "--out", "{tmp}/s.wav"],
    ["extend", "--weights", "{tmp}", "--song", "{tmp}/{long}.wav", "--out", "{tmp}/s.wav"],
    ["weights", "verify", "{tmp}/{long}"],
    ["tiny", "{tmp}/{long}"],
])
def test_an_input_name_over_255_bytes_is_one_line(argv: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    # Path.is_file()/exists() raise OSError [Errno 36] for such a name: it was a traceback
    long = "e" * 300
    assert main([a.format(tmp=tmp_path, long=long) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: The name eeee") and re.search(r"is 30[04] bytes;", err) and len(err) < 200
    assert list(tmp_path.iterdir()) == []


def test_tiny_never_overwrites_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # `khala tiny "$(khala weights path | head -1)"` once replaced the downloaded model with noise
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "khala_backbone.safetensors").write_bytes(b"the real 8 GB")
    assert main(["tiny", str(tmp_path / "w")]) == 1
    assert "already holds model files (khala_backbone.safetensors)" in capsys.readouterr().err
    assert (tmp_path / "w" / "khala_backbone.safetensors").read_bytes() == b"the real 8 GB"
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["khala_backbone.safetensors"]
    (tmp_path / "file").write_text("x")
    assert main(["tiny", str(tmp_path / "file")]) == 1
    err = capsys.readouterr().err
    assert "it is a file, not a folder" in err and "Traceback" not in err


def test_without_weights_flag_the_model_is_found_where_khala_weights_download_puts_it(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "song.wav"
    monkeypatch.setenv("KHALA_WEIGHTS", str(tiny_weights))
    assert main(["generate", *BASE, "--out", str(out), "--quiet"]) == 0 and sf.info(str(out)).frames > 0
    assert main(["decode", "--codes", str(tmp_path / "song.wav.codes.npy"), "--out", str(tmp_path / "d.wav")]) == 0
    capsys.readouterr()
    missing = tmp_path / "no model here"
    monkeypatch.setenv("KHALA_WEIGHTS", str(missing))
    assert main(["generate", *BASE, "--out", str(tmp_path / "other.wav"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: No model at {missing}: download it with `khala weights download`, or say where it is: "
                   "--weights DIR (or --server URL for a Khala server)."]
    assert not (tmp_path / "other.wav").exists()


@pytest.mark.parametrize("out, message", [
    ("FOLDER", "error: Cannot write {tmp}: it is a folder; give a file name in it, such as {tmp}/song.wav."),
    ("-", "error: Cannot write a song to standard output: a song is a file with its sidecar and codes beside it; "
          "give a file name such as song.wav."),
])
def test_a_folder_or_stdout_as_the_song_says_what_to_give(tiny_weights: Path, tmp_path: Path, out: str, message: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    target = str(tmp_path) if out == "FOLDER" else out
    before = sorted(tmp_path.iterdir())
    assert generate(tiny_weights, Path(target)) == 1
    assert capsys.readouterr().err.strip() == message.format(tmp=tmp_path)
    assert sorted(tmp_path.iterdir()) == before


def test_decode_never_writes_bare_audio_over_a_song(tiny_weights: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    song = tmp_path / "song.wav"
    assert generate(tiny_weights, song) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert main(["decode", "--weights", str(tiny_weights), "--codes", str(tmp_path / "song.wav.codes.npy"),
                 "--out", str(song)]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: song.wav is a Khala song (song.wav.json, song.wav.codes.npy beside it); decoding over it would "
        "leave them describing other audio. Choose another --out name.")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
