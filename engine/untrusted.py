"""Reading files a person handed us (the weights folder): every read has a size cap, JSON and YAML
have a nesting cap, YAML aliases are refused. Torch-free, so the app can check a folder too.

The caps below are each well above the real file (sizes from the published files, the manifest's
estimates, or the tiny twins of ``engine.testing``, which share the real tensor names) and well
below what would cost seconds or gigabytes to refuse.
"""

from __future__ import annotations

import gc
import json
import os
import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml

MB = 1 << 20
GB = 1 << 30
# tokenizer.json: the Llama-3 file is 9,085,825 bytes; re-saved by `tokenizers` with pretty-printed
# merge pairs it is 17,210,088. 20 MB of worst-case JSON (7 M empty lists) takes 1.2-1.5 s and
# 575 MB to refuse on a busy 2-core Linux box.
TOKENIZER_JSON_BYTES = 20 * MB
# *_megatron_args.json: a dump of every Megatron training argument, about 20 kB (manifest estimate).
MEGATRON_ARGS_BYTES = 1 * MB
# decoder_config.yaml: about 2 kB (manifest estimate), 243 bytes for the tiny one.
DECODER_CONFIG_BYTES = 64 * 1024
# .khala-verified.json: our own record, about 200 bytes per file for seven files.
RECORD_BYTES = 1 * MB
# A safetensors JSON header: 16 tensors per layer at ~90 bytes each, about 35 kB for 24 layers
# (3,264 bytes for the tiny 2-layer one). 2 MB of worst-case header takes about 0.2 s to check.
# (The safetensors library itself allows 100 MB.)
SAFETENSORS_HEADER_BYTES = 2 * MB
# khala_*.safetensors: 3.2 and 3.8 GB in bf16; a float32 copy would be 6.5 and 7.5 GB.
SAFETENSORS_FILE_BYTES = 16 * GB
# decoder_weights.pt: about 1.06 GB (float32). Its zip directory: 308 entries for 300 tensors;
# its data.pkl: 38,940 bytes for the tiny twin, which has the same tensor names as the real one.
TORCH_ARCHIVE_BYTES = 8 * GB
TORCH_ARCHIVE_ENTRIES = 65_535
TORCH_ARCHIVE_DIRECTORY_BYTES = 8 * MB
TORCH_PICKLE_BYTES = 1 * MB
# Nesting: tokenizer.json is 7 levels deep, a safetensors header 3, the args 2, decoder_config.yaml 2.
JSON_MAX_DEPTH = 32
YAML_MAX_DEPTH = 16


class Refused(ValueError):
    """A file's content is refused. ``str`` is a few words on why, without the path."""


def size_text(n: int) -> str:
    for unit, scale in (("GB", GB), ("MB", MB), ("kB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def regular_file_size(path: Path | str, limit: int) -> int:
    """Size of ``path`` (symlinks followed), refused unless a regular file of at most ``limit`` bytes.

    Raises Refused, or OSError (missing, unreadable, a symlink loop).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise Refused("not a regular file")
    if st.st_size > limit:
        raise Refused(f"{st.st_size:,} bytes, more than the {size_text(limit)} such a file may have")
    return st.st_size


def read_capped(path: Path | str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (a file that grows meanwhile is cut off)."""
    regular_file_size(path, limit)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"more than the {size_text(limit)} such a file may have")
    return data


# -- JSON ---------------------------------------------------------------------------------------------
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _check_json_depth(data: bytes, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` before ``json`` recurses into it (C stack, time)."""
    # The brackets outside strings: drop escaped backslashes, then escaped quotes, so every quote
    # left opens or closes a string; the text outside strings is every other piece between quotes.
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKET)
    for _ in range(max_depth):  # each pass removes the innermost level
        if not brackets:
            return
        inner = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if len(inner) == len(brackets):  # unbalanced: short leftovers are json's to report
            if len(inner) <= 2 * max_depth:
                return
            break
        brackets = inner
    if brackets:
        raise Refused(f"nested more than {max_depth} levels deep, or its brackets do not pair up")


def parse_json(data: bytes | str, max_depth: int = JSON_MAX_DEPTH) -> Any:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    _check_json_depth(raw, max_depth)
    collecting = gc.isenabled()
    gc.disable()  # millions of new containers would trigger the cycle collector over and over (3x slower)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:  # also a number with thousands of digits
        raise Refused(f"not valid JSON ({_first_line(error)})") from None
    finally:
        if collecting:
            gc.enable()


def load_json(path: Path | str, limit: int, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """Parsed JSON of a file of at most ``limit`` bytes. Raises Refused or OSError."""
    return parse_json(read_capped(path, limit), max_depth)


# -- YAML ---------------------------------------------------------------------------------------------
class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (a "billion laughs" file expands them) and with a depth cap."""

    max_depth = YAML_MAX_DEPTH

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise Refused("it uses a YAML alias (*name); aliases are not accepted in this file")
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise Refused(f"nested more than {self.max_depth} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str | bytes) -> Any:
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except Refused:
        raise
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        raise Refused(f"not valid YAML ({_first_line(error)})") from None


def load_yaml(path: Path | str, limit: int) -> Any:
    """Parsed YAML of a file of at most ``limit`` bytes. Raises Refused or OSError."""
    return parse_yaml(read_capped(path, limit))


# -- messages -----------------------------------------------------------------------------------------
def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:160]


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2
_REPR.maxlong = 40


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to about 80 characters, without walking a huge nested value."""
    return _REPR.repr(value)
