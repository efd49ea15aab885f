"""No silent garbage (issue 13): a stage whose output holds NaN or inf is caught within one EOS check,
one pass or one decoder window, rerun once in a safe dtype (recorded in the sidecar), or refused
with one clear line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from engine.cli import main
from engine.device import safe_dtype

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def scale_tensor(folder: Path, file: str, name: str, factor: float) -> None:
    path = folder / file
    tensors = load_file(path)
    tensors[name] = (tensors[name].float() * factor).to(tensors[name].dtype)
    save_file(tensors, path)


def generate(weights: Path, out: Path, dtype: str) -> int:
    return main(["generate", "--weights", str(weights), "--tags", "Pop", "--instrumental", "--duration", "1",
                 "--seed", "2", "--max-tokens", "16", "--dtype", dtype, "--out", str(out), "--quiet"])


def test_float16_overflow_reruns_the_stage_in_a_safe_dtype(tiny_weights_copy: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    # activations far past float16's 65 504 in one MLP: float16 gives inf, bfloat16 (float32's range) does not
    scale_tensor(tiny_weights_copy, "khala_backbone.safetensors", "layers.1.mlp.up_proj.weight", 1e5)
    (tmp_path / "songs").mkdir()
    out = tmp_path / "songs" / "song.wav"
    assert generate(tiny_weights_copy, out, "float16") == 0
    sidecar = json.loads((tmp_path / "songs" / "song.wav.json").read_text())
    assert sidecar["dtype"] == "float16"
    fallback = sidecar["dtype_fallbacks"][0]
    assert (fallback["stage"], fallback["from"], fallback["to"]) == ("backbone", "float16", "bfloat16")
    audio, _ = sf.read(str(out))
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert "non-finite" in capsys.readouterr().err  # said, even with --quiet


def test_a_stage_that_stays_non_finite_is_one_line_and_nothing_written(tiny_weights_copy: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    scale_tensor(tiny_weights_copy, "khala_superres.safetensors", "layers.0.mlp.up_proj.weight", float("nan"))
    out = tmp_path / "songs"
    out.mkdir()
    assert generate(tiny_weights_copy, out / "song.wav", "float16") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: The super-res stage produced non-finite values")
    assert "nothing was written" in err[-1] and list(out.iterdir()) == []


def test_float32_is_the_last_resort() -> None:
    cpu, mps = torch.device("cpu"), torch.device("mps")
    assert safe_dtype(cpu, torch.float16) == torch.bfloat16
    assert safe_dtype(cpu, torch.bfloat16) == torch.float32
    assert safe_dtype(cpu, torch.float32) is None
    assert safe_dtype(mps, torch.float16) in (torch.bfloat16, torch.float32)  # bfloat16 needs macOS 14
