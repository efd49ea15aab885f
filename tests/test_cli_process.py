"""`khala generate` as a real process: SIGTERM, kills at random moments, checks before any model loads,
and the rough preview file."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def khala(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *args]


def gen_args(weights: Path, out: Path, *extra: str) -> list[str]:
    return khala("generate", "--weights", str(weights), "--tags", "Pop", "--instrumental", "--duration", "1",
                 "--seed", "5", "--out", str(out), *extra)


def wait_for(proc: subprocess.Popen, needle: str, timeout: float = 120.0) -> str:
    """Read stderr until ``needle`` appears (the progress bar's stage lines)."""
    seen = ""
    end = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < end, seen
        char = proc.stderr.read(1)
        assert char, seen
        seen += char
    return seen


def test_sigterm_is_a_cancel(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "song.wav"
    proc = subprocess.Popen(gen_args(tiny_weights, out, "--max-tokens", "23552"), stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=ENV)
    wait_for(proc, "» backbone")
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143
    assert rest.strip().splitlines()[-1] == "cancelled" and "Traceback" not in rest
    assert list(tmp_path.iterdir()) == []


def test_twenty_kills_then_a_normal_run_leave_only_whole_songs(tiny_weights: Path, tmp_path: Path) -> None:
    """kill -9 at random moments (seeded), into one folder; then one run that completes."""
    out = tmp_path / "song.wav"
    args = gen_args(tiny_weights, out, "--variations", "2", "--max-tokens", "16", "--quiet")
    start = time.monotonic()
    subprocess.run(args, cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=300)
    full = time.monotonic() - start
    rng = random.Random(20)
    for _ in range(20):
        proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3 * full, 1.1 * full))  # the imports take the first third
        proc.kill()
        proc.wait(timeout=30)
    subprocess.run(args, cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=300)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    audio = [n for n in names if n.endswith(".wav")]
    assert audio == ["song-2.wav", "song.wav"]
    for name in audio:
        sidecar = json.loads((tmp_path / f"{name}.json").read_text())
        codes = np.load(tmp_path / sidecar["codes"])
        assert sidecar["audio"] == name and codes.shape == (64, sidecar["tokens"]["audio_frames"])
        assert sf.info(str(tmp_path / name)).frames == codes.shape[1] * 2048


@pytest.mark.parametrize("out, message", [
    ("missing/song.wav", "does not exist"),
    ("song.ogg", "unknown audio format"),
    ("a" * 252 + ".wav", "256 bytes"),
])
def test_output_problems_are_found_before_the_model_loads(tmp_path: Path, out: str, message: str) -> None:
    """The weights folder does not even exist: the output is checked first."""
    proc = subprocess.run(gen_args(tmp_path / "no-weights", tmp_path / out), cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert proc.stderr.startswith("error: ") and list(tmp_path.iterdir()) == []


def test_preview_out_holds_the_whole_rough_song_at_the_end(tiny_weights: Path, tmp_path: Path) -> None:
    from engine.cli import main

    args = gen_args(tiny_weights, tmp_path / "s.wav", "--max-tokens", "64", "--quiet",
                    "--preview-out", str(tmp_path / "rough.wav"), "--preview-every", "0.5")[3:]
    assert main(args) == 0
    sidecar = json.loads((tmp_path / "s.wav.json").read_text())
    rough, rate = sf.read(str(tmp_path / "rough.wav"), always_2d=True)
    assert rate == 44_100 and rough.shape == (sidecar["tokens"]["audio_frames"] * 2048, 2)
    assert np.isfinite(rough).all() and np.abs(rough).max() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rough.wav", "s.wav", "s.wav.codes.npy", "s.wav.json"]


def tokenizer_file() -> Path:
    from engine.weights.download import local_tokenizer
    path = local_tokenizer()
    assert path is not None
    return path


def test_a_closed_pipe_is_a_quiet_exit(tmp_path: Path) -> None:
    """`khala prompt … | head -c 1`: the reader has what it wanted; no traceback, nothing on stderr."""
    lyrics = tmp_path / "long.txt"
    lyrics.write_text("la la la la la\n" * 8000)  # the JSON is larger than a pipe's 64 kB buffer
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writer = subprocess.run(khala("prompt", "--tokenizer", str(tokenizer_file()), "--tags", "Pop",
                                  "--lyrics-file", str(lyrics), "--duration", "2"), stdout=reader.stdin,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV, timeout=120)
    reader.stdin.close()
    assert reader.stdout.read() == b"{" and reader.wait(timeout=30) == 0
    assert writer.returncode == 0 and writer.stderr == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_device_is_one_error_line() -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(khala("prompt", "--tokenizer", str(tokenizer_file()), "--tags", "Pop", "--instrumental"),
                              stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == "error: cannot write the output: No space left on device\n"
