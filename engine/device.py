"""Device and dtype policy: MPS → CUDA → CPU; fp16 on MPS, bf16 on CUDA, fp32 on CPU.

``KHALA_DEVICE`` and ``KHALA_DTYPE`` override the choice; explicit arguments override both.
"""

from __future__ import annotations

import gc
import os

import torch

from engine.errors import RequestError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
DEFAULT_DTYPE = {"mps": torch.float16, "cuda": torch.bfloat16, "cpu": torch.float32}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(name: str | None = None) -> torch.device:
    name = name or os.environ.get("KHALA_DEVICE") or ""
    if not name or name == "auto":
        if _mps_available():
            return torch.device("mps")
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "mps" and not _mps_available():
        raise RequestError("Device 'mps' was asked for, but Metal (MPS) is not available on this machine.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RequestError("Device 'cuda' was asked for, but no CUDA GPU is available.")
    if kind not in ("mps", "cuda", "cpu"):
        raise RequestError(f"Unknown device {name!r}: use auto, mps, cuda or cpu.")
    return torch.device(name)


def pick_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    name = name or os.environ.get("KHALA_DTYPE") or ""
    if not name or name == "auto":
        return DEFAULT_DTYPE[device.type]
    if name not in DTYPES:
        raise RequestError(f"Unknown dtype {name!r}: use auto, float32, float16 or bfloat16.")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def release_memory(device: torch.device) -> None:
    """Give freed tensors back to the device, so the next stage starts lean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def pick_decoder_dtype(name: str | None = None) -> torch.dtype:
    """The DAC decoder runs in float32 everywhere, as upstream does (``KHALA_DECODER_DTYPE`` overrides).

    Windowed decoding keeps its activations to a few GB, so full precision is affordable,
    and it avoids fp16 overflow in the convolutions on MPS.
    """
    name = name or os.environ.get("KHALA_DECODER_DTYPE") or "float32"
    if name not in DTYPES:
        raise RequestError(f"Unknown decoder dtype {name!r}: use float32, float16 or bfloat16.")
    return DTYPES[name]


def bfloat16_supported(device: torch.device) -> bool:
    """bfloat16 runs on CPU and CUDA; on MPS only from macOS 14 (Sonoma)."""
    if device.type != "mps":
        return True
    check = getattr(torch.backends.mps, "is_macos_or_newer", None)
    try:
        return bool(check is not None and check(14, 0))
    except RuntimeError:  # no MPS backend in this build (e.g. Linux)
        return False


def safe_dtype(device: torch.device, failed: torch.dtype) -> torch.dtype | None:
    """The dtype to rerun a stage in after ``failed`` overflowed: bfloat16 (float32's range, half
    the memory) where supported, else float32; None when ``failed`` was already float32."""
    if failed == torch.float32:
        return None
    if failed == torch.float16 and bfloat16_supported(device):
        return torch.bfloat16
    return torch.float32
