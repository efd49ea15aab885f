"""`khala doctor`: parity against CPU float32, non-finite layers by name, CPU-fallback ops, the
verdict's thresholds, a report without user paths, and the MPS seatbelt set before torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.doctor import doctor_report, run_doctor
from engine.doctor_probes import (NonFiniteWatch, agreement, capture_fallback_ops, float32_compute, greedy_probe,
                                  superres_pass_tokens, superres_probe)
from engine.doctor_report import FAIL, PASS, WARN, Parity, fallback_ops_in, grade_transformer, scrub
from engine.errors import Cancelled
from engine.events import CancelToken, Progress
from engine.model.loader import load_transformer

ROOT = Path(__file__).resolve().parent.parent
JSON_KEYS = {"device", "dtype", "verdict", "parity", "nonfinite", "nonfinite_layers", "fallback_ops",
             "tokens_per_s", "peak_memory_gb", "checks"}
PARITY_KEYS = {"backbone_cosine", "backbone_max_abs_err", "greedy_agreement"}
# torch's warning, word for word (aten/src/ATen/mps/MPSFallback.mm)
MPS_FALLBACK = ("The operator '{}' is not currently supported on the MPS backend and will fall back to run on "
                "the CPU. This may have performance implications.")
PROMPT = [128000, 31, 47, 128008, 128011, 128009, 128010]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def doctor_json(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict]:
    code = main(["doctor", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


# -- the whole probe ---------------------------------------------------------------------------------
def test_bfloat16_against_float32_on_the_tiny_checkpoint(tiny_weights: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report.json"
    code, data = doctor_json(capsys, "--weights", str(tiny_weights), "--device", "cpu", "--dtype", "bfloat16",
                             "--out", str(out))
    assert code == 0 and data["verdict"] in (PASS, WARN), data["summary"]
    assert JSON_KEYS <= set(data) and PARITY_KEYS <= set(data["parity"])
    assert (data["device"], data["dtype"]) == ("cpu", "bfloat16")
    parity = data["parity"]
    assert 0.995 <= parity["backbone_cosine"] <= 1 and 0 < parity["backbone_max_abs_err"] < 0.5
    assert parity["greedy_tokens"] == 32 and 0.75 <= parity["greedy_agreement"] <= 1
    assert parity["greedy_matches"] == round(parity["greedy_agreement"] * 32)
    assert parity["superres_cosine"] > 0.995 and parity["decoder_cosine"] > 0.999  # decoder: float32 both
    assert data["nonfinite"] is False and data["nonfinite_layers"] == [] and data["fallback_ops"] == []
    assert data["tokens_per_s"] > 0 and data["peak_memory_gb"] > 0
    names = [c["name"] for c in data["checks"]]
    assert {"machine", "weights", "backbone parity", "superres parity", "decoder parity", "numerics",
            "speed"} <= set(names)
    assert all(set(c) == {"name", "status", "detail"} and c["status"] in (PASS, WARN) for c in data["checks"])
    saved = out.read_text()
    assert json.loads(saved)["parity"] == parity
    assert str(tiny_weights.parent) not in saved and data["weights_folder"] == tiny_weights.name


def test_float16_overflow_is_named_by_layer_with_the_dtype_that_avoids_it(tiny_weights_copy: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import load_file, save_file

    path = tiny_weights_copy / "khala_backbone.safetensors"
    state = load_file(str(path))
    state["layers.1.mlp.up_proj.weight"] = state["layers.1.mlp.up_proj.weight"] * 1e5  # > 65504 in float16
    save_file(state, str(path))
    out = tmp_path / "report.txt"
    code, data = doctor_json(capsys, "--weights", str(tiny_weights_copy), "--device", "cpu", "--dtype", "float16",
                             "--quick", "--out", str(out))
    assert code == 1 and data["verdict"] == FAIL
    assert data["nonfinite"] is True and data["nonfinite_layers"][0] == "backbone.layers.1.mlp.up_proj"
    assert data["safe_dtype"] == "bfloat16"  # rerun in bfloat16: finite
    assert data["parity"]["backbone_cosine"] is None  # NaN never reaches the JSON
    numerics = next(c for c in data["checks"] if c["name"] == "numerics")
    assert numerics["status"] == FAIL and "backbone.layers.1.mlp.up_proj" in numerics["detail"]
    text = out.read_text()
    assert text.startswith("Khala doctor: FAIL") and "--dtype bfloat16" in text


def test_ops_that_fell_back_to_the_cpu_are_reported(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.model import transformer

    forward = transformer.MLP.forward

    def falling_back(self, x):  # what torch does on MPS when an op of this layer has no Metal kernel
        warnings.warn(MPS_FALLBACK.format("aten::silu.out"), UserWarning)
        return forward(self, x)

    monkeypatch.setattr(transformer.MLP, "forward", falling_back)
    report = doctor_report(tiny_weights, "cpu", "float32", quick=True)
    assert report.fallback_ops == ["aten::silu.out"]
    check = next(c for c in report.checks if c.name == "cpu fallback ops")
    assert check.status == WARN and "aten::silu.out" in check.detail
    assert report.verdict == WARN and report.to_dict()["fallback_ops"] == ["aten::silu.out"]


def test_cancel_stops_the_probe_without_a_report(tiny_weights: Path) -> None:
    cancel = CancelToken()
    seen = []
    with pytest.raises(Cancelled):
        for item in run_doctor(tiny_weights, "cpu", "float32", quick=True, cancel=cancel):
            seen.append(item)
            if isinstance(item, Progress) and item.stage == "backbone_reference":
                cancel.cancel()
    assert not any(type(item).__name__ == "DoctorReport" for item in seen)


def test_missing_weights_fail_with_a_report_and_no_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "private" / "weights"
    code, data = doctor_json(capsys, "--weights", str(folder), "--device", "cpu")
    assert code == 1 and data["verdict"] == FAIL
    weights = next(c for c in data["checks"] if c["name"] == "weights")
    assert weights["status"] == FAIL and "no weights folder" in weights["detail"]
    assert str(tmp_path) not in json.dumps(data)


def test_an_unavailable_device_is_a_failed_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    code, data = doctor_json(capsys, "--weights", str(tmp_path), "--device", "mps")
    assert code == 1 and data["checks"][-1]["name"] == "device" and "not available" in data["checks"][-1]["detail"]


def test_unwritable_report_fails_before_the_probe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["doctor", "--weights", str(tmp_path), "--out", str(tmp_path / "no" / "report.txt")])
    err = capsys.readouterr().err
    assert code == 1 and "does not exist" in err and "Checking the model files" not in err


# -- the instruments ------------------------------------------------------------------------------
def test_float32_reference_computes_what_a_float32_model_computes(tiny_weights: Path) -> None:
    def both(kind: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        files = (tiny_weights / f"khala_{kind}.safetensors", tiny_weights / f"{kind}_megatron_args.json")
        return load_transformer(*files, "cpu", torch.bfloat16), load_transformer(*files, "cpu", torch.float32)

    stored, wide = both("backbone")
    with torch.no_grad():
        with float32_compute(stored):
            ref = greedy_probe(stored, PROMPT, 12, cache_dtype=torch.float32)
        plain = greedy_probe(wide, PROMPT, 12)
        narrow = greedy_probe(stored, PROMPT, 12)  # after the block: bfloat16 again
    assert torch.equal(ref.hidden, plain.hidden) and torch.equal(ref.logits, plain.logits)
    assert ref.tokens == plain.tokens and ref.hidden.shape == (len(PROMPT) + 11, 32)
    assert not torch.equal(narrow.hidden, plain.hidden)
    assert stored.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16

    stored, wide = both("superres")  # its multi-codebook embedding sums 63 columns
    codes = torch.randint(0, 1024, (5, 63), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with float32_compute(stored):
            ref_hidden, ref_logits = superres_probe(stored, PROMPT, codes, 63)
        hidden, logits = superres_probe(wide, PROMPT, codes, 63)
    assert torch.equal(ref_hidden, hidden) and torch.equal(ref_logits, logits)
    assert stored.embed.weight.dtype == torch.bfloat16


def test_superres_probe_is_the_stage_pass(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Contract: the doctor's pass is the one expand_codes runs: the same input tokens, and (greedy,
    top-k 1) the same codes."""
    from engine.stages.superres import expand_codes

    model = load_transformer(tiny_weights / "khala_superres.safetensors", tiny_weights / "superres_megatron_args.json",
                             "cpu", torch.float32)
    inputs: list[torch.Tensor] = []
    hidden = model.hidden
    monkeypatch.setattr(model, "hidden", lambda tokens, *a, **k: inputs.append(tokens.clone()) or hidden(tokens, *a, **k))
    coarse = torch.randint(0, 1024, (6, 2), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        codes = expand_codes(model, PROMPT, coarse, top_k=1, generator=torch.Generator(), cancel=CancelToken())
        for idx in (2, 63):
            assert torch.equal(superres_pass_tokens(PROMPT, codes.T, idx), inputs[idx - 2])
            _, logits = superres_probe(model, PROMPT, codes.T, idx)
            assert torch.equal(logits.argmax(-1), codes[idx])


def test_non_finite_watch_names_the_first_layer() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
    with torch.no_grad():
        model[1][0].weight.fill_(1e5)
    model = model.half()
    with NonFiniteWatch(model, "m") as watch, torch.no_grad():
        model(torch.ones(1, 4, dtype=torch.half))
        assert watch.layers() == ["m.1.0", "m.1.1", "m.1"]
    assert not model._forward_hooks and not model[1][0]._forward_hooks


def test_fallback_capture_keeps_op_names_and_other_warnings(recwarn: pytest.WarningsRecorder) -> None:
    with capture_fallback_ops() as ops:
        for op in ("aten::foo", "aten::bar.out", "aten::foo"):
            warnings.warn(MPS_FALLBACK.format(op), UserWarning)
        assert torch.is_warn_always_enabled()
    assert ops == ["aten::foo", "aten::bar.out"] and not torch.is_warn_always_enabled()
    assert fallback_ops_in(["unrelated", MPS_FALLBACK.format("aten::x")]) == ["aten::x"]


def test_agreement_counts_near_ties() -> None:
    logits = torch.tensor([[0.0, 5.0, 4.95], [0.0, 5.0, 3.0], [1.0, 0.0, 0.0]])
    ref = logits.argmax(-1)
    assert agreement(logits, ref, torch.tensor([2, 2, 0])) == (1, 1)  # row 0 a near-tie, row 1 a real miss


@pytest.mark.parametrize("cosine, matches, ties, status", [
    (0.999998, 32, 0, PASS),  # the port with the double bias (SPEC §3)
    (0.9938, 32, 0, FAIL),  # the port without it
    (0.997, 32, 0, WARN),
    (0.99995, 28, 2, PASS),  # near-ties count for the verdict
    (0.99995, 26, 0, WARN),
    (0.99995, 20, 0, FAIL),
    (float("nan"), 0, 0, FAIL),
])
def test_transformer_thresholds(cosine: float, matches: int, ties: int, status: str) -> None:
    check = grade_transformer("backbone parity", Parity(cosine, 0.01, 32, matches, ties), "float16")
    assert check.status == status, check.detail


def test_scrub_keeps_only_the_weights_folder_name() -> None:
    folder = Path("/Users/ann/Music/Khala/weights")
    text = scrub(f"Weight file {folder}/khala_backbone.safetensors is cut; see /Users/ann/Desktop/log.txt.", folder)
    assert text == "Weight file weights/khala_backbone.safetensors is cut; see …/log.txt."


# -- the seatbelt --------------------------------------------------------------------------------------
SPY = r"""
import os, sys
seen = []
set_item = type(os.environ).__setitem__
def spy(self, key, value):
    if key == "PYTORCH_ENABLE_MPS_FALLBACK":
        seen.append(("torch" in sys.modules, value))
    set_item(self, key, value)
type(os.environ).__setitem__ = spy
import {module}
print(seen, os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK"))
"""


def seatbelt(module: str, user_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_ENABLE_MPS_FALLBACK"}
    if user_value is not None:
        env["PYTORCH_ENABLE_MPS_FALLBACK"] = user_value
    out = subprocess.run([sys.executable, "-c", SPY.format(module=module)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_khala_sets_the_mps_fallback_before_torch_loads() -> None:
    assert seatbelt("engine.cli", None) == "[(False, '1')] 1"
    assert seatbelt("engine.cli", "0") == "[] 0"  # the user's own value is kept


def test_the_summary_ends_with_one_full_stop_when_a_detail_has_its_own() -> None:
    # `khala doctor --device tpu` said "…use auto, mps, cuda or cpu.."
    from engine.doctor_report import Check, DoctorReport
    report = DoctorReport(device="tpu", dtype="auto", checks=[Check("device", FAIL, "Unknown device 'tpu'.")])
    assert report.summary.endswith("Unknown device 'tpu'.") and ".." not in report.summary
    report = DoctorReport(device="cpu", dtype="float32", checks=[Check("speed", WARN, "slow.")])
    assert report.summary.endswith("speed: slow.") and ".." not in report.summary
