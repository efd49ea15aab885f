"""The tensor table of a weight file (name → dtype and shape), read without torch and without the
tensor data: the JSON header of a ``.safetensors`` file, the ``data.pkl`` of a ``torch.save`` zip.

Both are untrusted: sizes are capped (``engine.untrusted``), every tensor's byte size must follow
from its dtype and shape, and the data the table points to must be exactly what the file holds.
Errors are ``engine.untrusted.Refused`` (a few words, no path) or OSError.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.untrusted import (SAFETENSORS_FILE_BYTES, SAFETENSORS_HEADER_BYTES, TORCH_ARCHIVE_BYTES,
                              TORCH_ARCHIVE_DIRECTORY_BYTES, TORCH_ARCHIVE_ENTRIES, TORCH_PICKLE_BYTES, Refused,
                              parse_json, regular_file_size, short_repr, size_text)

MAX_DIMS = 8
# safetensors dtype → bytes per element (the format's own names).
SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
                        "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
FLOATING = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str  # safetensors spelling: "BF16", "F32", …
    shape: tuple[int, ...]

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if (not isinstance(value, (list, tuple)) or len(value) > MAX_DIMS
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in value)):
        raise Refused(f"{what} has shape {short_repr(value)}, not a list of at most {MAX_DIMS} sizes")
    return tuple(value)


# -- safetensors -------------------------------------------------------------------------------------
def safetensors_table(path: Path | str) -> dict[str, TensorEntry]:
    """The header of a ``.safetensors`` file, checked to describe its data exactly (SPEC §2).

    The header is at most SAFETENSORS_HEADER_BYTES, the file at most SAFETENSORS_FILE_BYTES; each
    tensor's ``data_offsets`` span exactly dtype size × elements, and the spans tile the data.
    """
    size = regular_file_size(path, SAFETENSORS_FILE_BYTES)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise Refused("too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > SAFETENSORS_HEADER_BYTES:
            raise Refused(f"not a safetensors file (its header would be {n:,} bytes; "
                          f"at most {size_text(SAFETENSORS_HEADER_BYTES)} are accepted)")
        if n > size - 8:
            raise Refused("not a safetensors file (or cut off inside its header)")
        raw = f.read(n)
    try:
        header = parse_json(raw)
    except Refused as error:
        raise Refused(f"safetensors header does not parse: {error}") from None
    if not isinstance(header, dict):
        raise Refused("safetensors header does not parse: not a JSON object")
    table: dict[str, TensorEntry] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        what = f"tensor {short_repr(name)}"
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_ITEMSIZE:
            raise Refused(f"safetensors header does not parse: {what} has no known dtype")
        shape = _shape(entry.get("shape"), what)
        offsets = entry.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise Refused(f"safetensors header does not parse: {what} has data_offsets {short_repr(offsets)}")
        nbytes = math.prod(shape) * SAFETENSORS_ITEMSIZE[entry["dtype"]]
        if offsets[1] - offsets[0] != nbytes:
            raise Refused(f"its header lies: {what} is {entry['dtype']} {list(shape)} ({nbytes:,} bytes) "
                          f"but is given {offsets[1] - offsets[0]:,} bytes")
        table[name] = TensorEntry(entry["dtype"], shape)
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            raise Refused(f"its header lies: the data of tensor {short_repr(name)} "
                          f"{'overlaps another' if start < end else 'leaves a gap'}")
        end = stop
    expected = 8 + n + end
    if size < expected:
        raise Refused(f"truncated: {size:,} bytes, its header says {expected:,}")
    if size > expected:
        raise Refused(f"{size - expected:,} unexpected bytes after the tensor data")
    return table


# -- torch.save zip archives ---------------------------------------------------------------------------
# torch.<Name>Storage → safetensors dtype name and bytes per element.
_STORAGES = {"DoubleStorage": ("F64", 8), "FloatStorage": ("F32", 4), "HalfStorage": ("F16", 2),
             "BFloat16Storage": ("BF16", 2), "LongStorage": ("I64", 8), "IntStorage": ("I32", 4),
             "ShortStorage": ("I16", 2), "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1),
             "BoolStorage": ("BOOL", 1)}
# What torch.save writes for a dict of plain tensors (or Parameters); nothing is ever executed.
_OPCODES = {"PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE",
            "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE",
            "BINUNICODE8", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "LIST",
            "APPEND", "APPENDS", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "GLOBAL", "STACK_GLOBAL",
            "REDUCE", "BUILD", "BINPERSID", "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET"}
_MAX_MEMO = 1 << 20  # the unpickler sizes its memo table by the largest index it is given


@dataclass(frozen=True)
class _StorageType:
    dtype: str
    itemsize: int


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    itemsize: int
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _Tensor:
    if not isinstance(storage, _Storage) or isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise Refused("data.pkl holds a tensor without a proper storage")
    shape, strides = _shape(size, "a tensor"), _shape(stride, "a tensor's stride")
    if len(shape) != len(strides):
        raise Refused("data.pkl holds a tensor whose stride does not fit its shape")
    return _Tensor(storage, offset, shape, strides)


def _first(data: Any, *_: Any) -> Any:
    return data  # a Parameter is its data


_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _first,
    ("torch._utils", "_rebuild_parameter_with_state"): _first,
    ("collections", "OrderedDict"): OrderedDict,
    **{("torch", name): _StorageType(*spec) for name, spec in _STORAGES.items()},
}


class _TableUnpickler(pickle.Unpickler):
    """Builds stand-ins (``_Tensor``: storage, offset, shape, stride) instead of tensors."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise Refused(f"data.pkl refers to {f'{module}.{name}'[:100]}, which a plain dict of tensors "
                          "does not (nothing in it was run)") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and not isinstance(pid[4], bool)
                and pid[4] >= 0):
            return _Storage(pid[2], pid[1].dtype, pid[1].itemsize, pid[4])
        raise Refused("data.pkl refers to something other than a tensor storage")


def _check_opcodes(pkl: bytes) -> None:
    try:
        for opcode, arg, _ in pickletools.genops(pkl):
            if opcode.name not in _OPCODES:
                raise Refused(f"data.pkl uses the pickle opcode {opcode.name}, which torch.save of tensors does not")
            if opcode.name in ("BINPUT", "LONG_BINPUT") and arg > _MAX_MEMO:
                raise Refused("data.pkl is malformed (a memo index out of range)")
    except ValueError as error:
        raise Refused(f"data.pkl is malformed ({str(error)[:120]})") from None


def _check_directory_size(f: io.BufferedReader) -> None:
    """Refuse a zip directory too large to list cheaply, from the end-of-directory record alone."""
    end_record = getattr(zipfile, "_EndRecData", None)  # stdlib, private: skip the cap if it goes away
    if end_record is None:
        return
    record = end_record(f)
    if not record:
        raise Refused("not a zip archive, so not a torch.save file (truncated?)")
    entries, directory = record[zipfile._ECD_ENTRIES_TOTAL], record[zipfile._ECD_SIZE]
    if entries > TORCH_ARCHIVE_ENTRIES or directory > TORCH_ARCHIVE_DIRECTORY_BYTES:
        raise Refused(f"its zip directory lists {entries:,} entries in {directory:,} bytes; at most "
                      f"{TORCH_ARCHIVE_ENTRIES:,} in {size_text(TORCH_ARCHIVE_DIRECTORY_BYTES)} are accepted")


def _read_pickle(f: io.BufferedReader) -> tuple[bytes, str, dict[str, zipfile.ZipInfo]]:
    """(data.pkl, the archive's folder prefix, every entry by name)."""
    _check_directory_size(f)
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            index = {info.filename: info for info in archive.infolist()}
            pickles = [name for name in index if name.endswith("/data.pkl") or name == "data.pkl"]
            if len(pickles) != 1:
                raise Refused("zip archive without data.pkl: not a torch.save file")
            info = index[pickles[0]]
            if info.file_size > TORCH_PICKLE_BYTES:
                raise Refused(f"its data.pkl is {info.file_size:,} bytes; at most "
                              f"{size_text(TORCH_PICKLE_BYTES)} are accepted")
            with archive.open(info) as member:
                pkl = member.read(TORCH_PICKLE_BYTES + 1)
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, RuntimeError) as error:
        if isinstance(error, Refused):
            raise
        raise Refused(f"not a readable torch.save archive ({str(error)[:120]}; truncated?)") from None
    if len(pkl) > TORCH_PICKLE_BYTES:
        raise Refused(f"its data.pkl is more than {size_text(TORCH_PICKLE_BYTES)}")
    return pkl, pickles[0][: -len("data.pkl")], index


def torch_archive_table(path: Path | str) -> dict[str, TensorEntry]:
    """Tensors of a ``torch.save`` zip archive of a dict of tensors (SPEC §2: decoder_weights.pt).

    Reads the zip directory and ``data.pkl`` only (at most TORCH_PICKLE_BYTES), with stand-ins
    for tensors, so nothing in the file is executed. Entries that are not tensors are left out.
    Each tensor's storage must be in the archive with exactly the size its pickle states, and
    the tensor must lie inside it.
    """
    regular_file_size(path, TORCH_ARCHIVE_BYTES)
    with open(path, "rb") as f:
        pkl, prefix, index = _read_pickle(f)
    _check_opcodes(pkl)
    try:
        state = _TableUnpickler(io.BytesIO(pkl)).load()
    except Refused:
        raise
    except Exception as error:  # noqa: BLE001 - pickle raises many kinds for a malformed stream
        raise Refused(f"data.pkl does not load ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise Refused(f"it holds a {type(state).__name__}, not a dict of tensors")
    table: dict[str, TensorEntry] = {}
    for name, value in state.items():
        if isinstance(value, _Tensor):
            _check_storage(value, index, prefix, str(name))
            table[str(name)] = TensorEntry(value.storage.dtype, value.shape)
    return table


def _check_storage(tensor: _Tensor, index: dict[str, zipfile.ZipInfo], prefix: str, name: str) -> None:
    storage = tensor.storage
    what = f"tensor {short_repr(name)}"
    entry = index.get(f"{prefix}data/{storage.key}")
    if entry is None:
        raise Refused(f"{what}: its data ({short_repr(storage.key)}) is not in the archive")
    if entry.file_size != storage.numel * storage.itemsize:
        raise Refused(f"{what}: its storage should be {storage.numel * storage.itemsize:,} bytes, "
                      f"the archive holds {entry.file_size:,}")
    if 0 not in tensor.shape:
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride))
        if last >= storage.numel:
            raise Refused(f"{what} reaches past the end of its storage")
