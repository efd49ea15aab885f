"""Strict loading of a transformer from ``khala_*.safetensors`` + ``*_megatron_args.json``.

Every tensor name, shape and dtype is checked against the config (through the safetensors
library) before any data is read. The module is built on the meta device; each tensor is
then allocated once in the target device and dtype and filled from the file with plain
reads of at most ``READ_CHUNK_BYTES``, converted slice by slice. Nothing is memory-mapped
while the data is read, so a load peaks near the model's own size: the file's pages stay
in the OS's cache, not in this process (a mapped file's pages would count as ours until
unmapped, adding the file's size to the peak).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import safe_open

from engine.model.config import load_config
from engine.errors import WeightsError
from engine.model.transformer import Transformer

READ_CHUNK_BYTES = 16 << 20  # one read + conversion slice; the only transient of a load
FILE_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}


def load_transformer(safetensors_path: Path | str, args_path: Path | str, device: torch.device | str,
                     dtype: torch.dtype) -> Transformer:
    """The model in ``dtype`` on ``device``, every weight from the file (strict: no name
    missing or extra, shapes as the config says, floating-point data). Raises WeightsError
    (missing, truncated or corrupt file, name/shape/dtype mismatch) or ConfigError (args)."""
    path = Path(safetensors_path)
    cfg = load_config(args_path)
    with torch.device("meta"):
        model = Transformer(cfg)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not path.is_file():
        raise WeightsError(f"Weight file not found: {path}")
    try:
        file_dtypes = _check(path, want, Path(args_path).name)
        offsets = _data_offsets(path)
        state = {}
        # one read slice for the whole load: a buffer freed per tensor would leave the C heap
        # fragmented between the weights (measured: up to +0.9 GB resident at real width)
        buf = torch.empty(min(READ_CHUNK_BYTES, max(e - s for s, e in offsets.values())), dtype=torch.uint8)
        with open(path, "rb", buffering=0) as f:
            for name in want:
                start, end = offsets[name]
                try:
                    state[name] = _read_tensor(f, start, end, want[name], file_dtypes[name], device, dtype, buf)
                except ValueError as e:
                    raise ValueError(f"tensor {name}: {e}") from None
    except WeightsError:
        raise
    except Exception as e:  # safetensors' own errors, OSError, or ours (ValueError) for truncated/corrupt files
        raise WeightsError(f"Weight file {path} is truncated or corrupt ({type(e).__name__}: {e}). "
                           "Delete it and download it again.") from None
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _check(path: Path, want: dict[str, tuple[int, ...]], args_name: str) -> dict[str, torch.dtype]:
    """Names, shapes and dtypes through the safetensors library (header only); name → file dtype."""
    dtypes = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        names = set(f.keys())
        for name in sorted(want.keys() - names):
            raise WeightsError(f"Tensor {name} is missing from {path}.")
        for name in sorted(names - want.keys()):
            raise WeightsError(f"Unexpected tensor {name} in {path}: not part of this model.")
        for name in want:
            info = f.get_slice(name)
            shape = tuple(info.get_shape())
            if shape != want[name]:
                raise WeightsError(f"Tensor {name} in {path} has shape {list(shape)}, "
                                   f"expected {list(want[name])} from {args_name}.")
            kind = info.get_dtype()
            if kind not in FILE_DTYPES:
                raise WeightsError(f"Tensor {name} in {path} has dtype {kind}, expected floating point.")
            dtypes[name] = FILE_DTYPES[kind]
    return dtypes


def _data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """name → (first, last + 1) byte in the file. The format: an 8-byte little-endian header
    length, the JSON header, then the data; header offsets count from the data's start.
    (The safetensors library has validated the header already: offsets in bounds, no overlap.)"""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    return {k: (base + v["data_offsets"][0], base + v["data_offsets"][1])
            for k, v in header.items() if k != "__metadata__"}


def _read_tensor(f: BinaryIO, start: int, end: int, shape: tuple[int, ...], file_dtype: torch.dtype,
                 device: torch.device | str, dtype: torch.dtype, buf: torch.Tensor) -> torch.Tensor:
    """Fill a new [shape] tensor in ``dtype`` on ``device`` from file bytes start..end, through
    ``buf`` (uint8, host) one slice at a time."""
    out = torch.empty(shape, dtype=dtype, device=device)
    flat = out.view(-1)
    item = torch.empty((), dtype=file_dtype).element_size()
    if end - start != flat.numel() * item:
        raise ValueError(f"{end - start} bytes stored for {flat.numel()} {file_dtype} values")
    f.seek(start)
    if flat.device.type == "cpu" and dtype == file_dtype:  # straight into the tensor, no slice copy
        _read_exactly(f, memoryview(flat.view(torch.uint8).numpy()))
        return out
    step = max(1, buf.numel() // item)
    for e0 in range(0, flat.numel(), step):
        e1 = min(flat.numel(), e0 + step)
        raw = buf[:(e1 - e0) * item]
        _read_exactly(f, memoryview(raw.numpy()))
        values = raw.view(file_dtype)
        if flat.device.type != "cpu":
            values = values.to(dtype)  # convert on the host, then one same-dtype copy to the device
        flat[e0:e1].copy_(values)
    return out


def _read_exactly(f: BinaryIO, view: memoryview) -> None:
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            raise ValueError("the file ends before the tensor's data")
        done += n
