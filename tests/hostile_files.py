"""Hostile weights folders: a copy of a good folder (symlinks to its files) with one file damaged.

Each case is (name, damage(folder), expected): ``expected`` is (error class name, words in the
message), or None when the folder must still pass (our own record is only a cache).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import struct
import zipfile
from pathlib import Path
from typing import Callable

ARGS = "backbone_megatron_args.json"
BACKBONE = "khala_backbone.safetensors"
DECODER = "decoder_weights.pt"
DECODER_CONFIG = "decoder_config.yaml"
TOKENIZER = "tokenizer.json"
RECORD = ".khala-verified.json"
MB = 1 << 20


def damaged_copy(good: Path, dest: Path, damage: Callable[[Path], None]) -> Path:
    dest.mkdir(parents=True)
    for path in good.iterdir():
        (dest / path.name).symlink_to(path.resolve())
    damage(dest)
    return dest


def _replace(folder: Path, name: str, data: bytes | str) -> None:
    path = folder / name
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _sparse(folder: Path, name: str, head: bytes, size: int) -> None:
    path = folder / name
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)


def yaml_bomb() -> str:
    """A "billion laughs": 9 levels of 9 aliases, 387 M strings once expanded (2.1 GB as text)."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        prev, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines + ["decoder: *i", "quantizer: {dim: 8}", ""])


def _edit_args(folder: Path, **changes: object) -> None:
    args = json.loads((folder / ARGS).read_text())
    args.update(changes)
    _replace(folder, ARGS, json.dumps(args))


def _edit_header(folder: Path, name: str, edit: Callable[[dict], None]) -> None:
    """Rewrite a safetensors header, keeping the tensor data as it was."""
    data = (folder / name).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw = raw.ljust(-(-len(raw) // 8) * 8)  # padded with spaces, as the format does
    _replace(folder, name, struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def _set_shape(tensor: str, shape: list[int]) -> Callable[[dict], None]:
    return lambda header: header[tensor].update(shape=shape)


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


class RunsACommand:
    """Unpickling this would run a command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _pickle_that_runs(marker: Path) -> Callable[[Path], None]:
    data = pickle.dumps({"decoder.model.0.bias": RunsACommand(marker)}, protocol=2)
    return lambda folder: _replace(folder, DECODER, _zip({"decoder_weights/data.pkl": data,
                                                         "decoder_weights/version": b"3\n"}))


def _decoder_with_wrong_shape(folder: Path) -> None:
    import torch

    state = torch.load(folder / DECODER, weights_only=True)
    state["decoder.model.0.bias"] = torch.zeros(state["decoder.model.0.bias"].numel() + 1)
    path = folder / DECODER
    path.unlink()
    torch.save(state, path)


def _fifo(folder: Path) -> None:
    (folder / TOKENIZER).unlink()
    os.mkfifo(folder / TOKENIZER)


def _loop(folder: Path) -> None:
    (folder / TOKENIZER).unlink()
    (folder / TOKENIZER).symlink_to(folder / TOKENIZER)


def cases(marker: Path) -> list[tuple[str, Callable[[Path], None], tuple[str, str] | None]]:
    deep = 100_000
    return [
        ("yaml bomb", lambda f: _replace(f, DECODER_CONFIG, yaml_bomb()), ("WeightsError", "YAML alias")),
        ("deep yaml", lambda f: _replace(f, DECODER_CONFIG, "decoder: " + "[" * 20_000 + "]" * 20_000),
         ("WeightsError", "nested more than")),
        ("oversized yaml", lambda f: _replace(f, DECODER_CONFIG, "decoder: {}\n#" + "x" * MB),
         ("WeightsError", "more than the 64 kB")),
        ("decoder width", lambda f: _replace(f, DECODER_CONFIG, (f / DECODER_CONFIG).read_text().replace(
            "n_filters: 4", "n_filters: 60000")), ("ConfigError", "channels wide")),
        ("deep json", lambda f: _replace(f, ARGS, '{"a": ' + "[" * deep + "]" * deep + "}"),
         ("WeightsError", "nested more than")),
        ("oversized json", lambda f: _edit_args(f, pad="x" * (2 * MB)), ("WeightsError", "more than the 1 MB")),
        ("5000-digit number", lambda f: _replace(f, ARGS, (f / ARGS).read_text().replace(
            '"num_layers": 2', '"num_layers": 1' + "0" * 5000)), ("WeightsError", "not valid JSON")),
        ("num_layers 100000", lambda f: _edit_args(f, num_layers=100_000), ("ConfigError", "num_layers=100000")),
        ("hidden 10^9", lambda f: _edit_args(f, hidden_size=10**9), ("ConfigError", "hidden_size=1000000000")),
        ("NaN epsilon", lambda f: _replace(f, ARGS, (f / ARGS).read_text().replace(
            '"norm_epsilon": 1e-06', '"norm_epsilon": NaN')), ("ConfigError", "norm_epsilon=nan")),
        ("num_layers 24 of 2", lambda f: _edit_args(f, num_layers=24), ("WeightsError", "holds 2 layers")),
        ("wrong ffn shape", lambda f: _edit_args(f, ffn_hidden_size=128),
         ("WeightsError", "mlp.gate_proj.weight has shape [96, 32]")),
        ("header lies: shape", lambda f: _edit_header(f, BACKBONE, _set_shape("norm.weight", [33])),
         ("WeightsError", "header lies")),
        ("header lies: 10^18 elements", lambda f: _edit_header(f, BACKBONE, _set_shape("norm.weight", [10**9, 10**9])),
         ("WeightsError", "header lies")),
        ("header of 1 TB", lambda f: _replace(f, BACKBONE, struct.pack("<Q", 1 << 40) + b"{}" * 100),
         ("WeightsError", "not a safetensors file")),
        ("17 GB safetensors", lambda f: _sparse(f, BACKBONE, b"\0" * 8, 17 << 30),
         ("WeightsError", "more than the 16 GB")),
        ("decoder not a zip", lambda f: _replace(f, DECODER, b"not a zip archive\n" * 1000),
         ("WeightsError", "not a zip")),
        ("decoder pickle runs a command", _pickle_that_runs(marker), ("WeightsError", "posix.system")),
        ("decoder data.pkl of 64 MB", lambda f: _replace(f, DECODER, _zip(
            {"decoder_weights/data.pkl": b"\0" * (64 * MB)}, zipfile.ZIP_DEFLATED)), ("WeightsError", "data.pkl is")),
        ("decoder tensor shape", _decoder_with_wrong_shape, ("WeightsError", "decoder.model.0.bias has shape")),
        ("tokenizer 1 GB of spaces", lambda f: _sparse(f, TOKENIZER, b" " * MB, 1 << 30),
         ("WeightsError", "more than the 20 MB")),
        ("deep tokenizer", lambda f: _replace(f, TOKENIZER, b"[" * (10 * MB)), ("WeightsError", "nested more than")),
        ("tokenizer symlink loop", _loop, ("WeightsError", "missing 1 of 7 files: tokenizer.json")),
        ("tokenizer FIFO", _fifo, ("WeightsError", "missing 1 of 7 files: tokenizer.json")),
        ("record of 2 MB", lambda f: _replace(f, RECORD, json.dumps({"files": {}, "pad": "x" * (2 * MB)})), None),
        ("deep record", lambda f: _replace(f, RECORD, "[" * deep + "]" * deep), None),
    ]
