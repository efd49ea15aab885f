from __future__ import annotations

import pytest
import torch

from engine.device import pick_device, pick_dtype
from engine.errors import RequestError


def test_auto_picks_cpu_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KHALA_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected


def test_env_override_and_argument_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KHALA_DEVICE", "cpu")
    assert pick_device().type == "cpu"
    monkeypatch.setenv("KHALA_DEVICE", "nonsense")
    with pytest.raises(RequestError, match="nonsense"):
        pick_device()
    assert pick_device("cpu").type == "cpu"


def test_unavailable_accelerators_are_refused_clearly() -> None:
    if not torch.backends.mps.is_available():
        with pytest.raises(RequestError, match="MPS"):
            pick_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(RequestError, match="CUDA"):
            pick_device("cuda")


@pytest.mark.parametrize("kind, dtype", [("cpu", torch.float32), ("cuda", torch.bfloat16), ("mps", torch.float16)])
def test_default_dtype_per_device(kind: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KHALA_DTYPE", raising=False)
    assert pick_dtype(torch.device(kind)) == dtype


def test_dtype_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KHALA_DTYPE", "bf16")
    assert pick_dtype(torch.device("cpu")) == torch.bfloat16
    assert pick_dtype(torch.device("cpu"), "float16") == torch.float16
    with pytest.raises(RequestError, match="float64"):
        pick_dtype(torch.device("cpu"), "float64")


def test_auto_order_is_mps_then_cuda_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.device as device_mod
    monkeypatch.delenv("KHALA_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: True)
    assert pick_device().type == "mps"  # a machine with both picks MPS
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    assert pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device().type == "cpu"


def test_decoder_runs_in_float32_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.device import pick_decoder_dtype
    monkeypatch.delenv("KHALA_DECODER_DTYPE", raising=False)
    monkeypatch.setenv("KHALA_DTYPE", "float16")
    assert pick_decoder_dtype() == torch.float32
    monkeypatch.setenv("KHALA_DECODER_DTYPE", "bfloat16")
    assert pick_decoder_dtype() == torch.bfloat16
    with pytest.raises(RequestError, match="decoder dtype"):
        pick_decoder_dtype("int8")
