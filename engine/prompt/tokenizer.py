"""Llama-3 BPE for plain text, with the special tokens pinned to the Llama 3.1 table.

The tokenizer file is used for its BPE model only (SPEC §4): its own added tokens are
dropped, so a Llama 3.2 file (which renames the reserved tokens and adds ``<|image|>``
at 128256) gives the same ids as a 3.1 file.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer as _BPE

from engine.errors import PromptError
from engine.prompt.special_tokens import AUDIO_BASE, CODEBOOK_SIZE, ID_TO_SPECIAL, SPECIAL_TOKENS
from engine.untrusted import TOKENIZER_JSON_BYTES, Refused, load_json

TEXT_VOCAB_SIZE = 128_000
# Ids every Llama-3 BPE vocabulary has (checked against the real file).
KNOWN_IDS = {"Hello": 9906, "Ġworld": 1917}

_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in sorted(SPECIAL_TOKENS, key=len, reverse=True)) + ")")


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PromptError(f"Tokenizer file not found: {path}")
    try:
        data = load_json(path, TOKENIZER_JSON_BYTES)
    except OSError as e:
        raise PromptError(f"Tokenizer file {path} cannot be read ({e.strerror or e.__class__.__name__}).") from None
    except Refused as e:
        raise PromptError(f"Tokenizer file {path} is refused: {e}.") from None
    if not isinstance(data, dict):
        raise PromptError(f"Tokenizer file {path} is not a tokenizer.json (top level is not an object).")
    return data


def bpe_problem(data: dict[str, Any]) -> str | None:
    """Why a parsed tokenizer.json is not a Llama-3 BPE, in a few words; None when it is one."""
    model = data.get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    if kind != "BPE":
        return f"model type {kind!r} is not a BPE; expected a BPE with merges"
    if not model.get("merges"):
        return "it has no merges; expected a BPE with merges"
    vocab = model.get("vocab")
    size = len(vocab) if isinstance(vocab, dict) else 0
    if size != TEXT_VOCAB_SIZE:
        return f"{size} BPE entries, a Llama-3 BPE has {TEXT_VOCAB_SIZE}"
    for token, want in KNOWN_IDS.items():
        if vocab.get(token) != want:
            return f"not the Llama-3 vocabulary ({token!r} is not {want})"
    return None


def _check_bpe(data: dict[str, Any], path: Path) -> None:
    problem = bpe_problem(data)
    if problem is not None:
        raise PromptError(f"Tokenizer file {path}: {problem}.")


def validate_tokenizer_json(path: str | Path) -> None:
    """Raise PromptError, naming the file, unless it is a readable Llama-3 BPE tokenizer.json."""
    path = Path(path)
    _check_bpe(_load_json(path), path)


def _bpe_only(data: dict[str, Any], path: Path) -> _BPE:
    data = dict(data, added_tokens=[], post_processor=None, truncation=None, padding=None)
    try:
        bpe = _BPE.from_str(json.dumps(data))
    except Exception as e:  # the library raises plain Exception subclasses
        raise PromptError(f"Tokenizer file {path} could not be loaded: {e}") from None
    if bpe.encode("Hello world", add_special_tokens=False).ids != [KNOWN_IDS["Hello"], KNOWN_IDS["Ġworld"]]:
        raise PromptError(f"Tokenizer file {path} does not encode like a Llama-3 BPE.")
    return bpe


class Tokenizer:
    """Llama-3 BPE with the special tokens pinned to the 3.1 table (see ``encode_text``, ``encode``)."""

    _cache: dict[tuple[str, int, int], "Tokenizer"] = {}
    _lock = threading.Lock()

    def __init__(self, bpe: _BPE, path: Path) -> None:
        self._bpe = bpe
        self.path = path

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        """Load (or reuse) the tokenizer for ``path``; PromptError if it is not a Llama-3 BPE."""
        path = Path(path).expanduser().resolve()
        try:
            st = path.stat()
        except OSError:
            raise PromptError(f"Tokenizer file not found: {path}") from None
        key = (str(path), st.st_mtime_ns, st.st_size)
        with cls._lock:
            if key not in cls._cache:
                data = _load_json(path)
                _check_bpe(data, path)
                cls._cache[key] = cls(_bpe_only(data, path), path)
            return cls._cache[key]

    def encode_text(self, text: str) -> list[int]:
        """Plain-text BPE of ``text``: a special-token string in it (``<|eot_id|>``) is encoded as
        its characters, never as a control id. Every user field goes through this."""
        return self._bpe.encode(text, add_special_tokens=False).ids if text else []

    def encode(self, text: str) -> list[int]:
        """Prompt *text* as upstream encodes it: 3.1 special-token strings anywhere in ``text``
        become their ids. For template text only (tests compare it with ``build_prompts``);
        never for user text, which ``encode_text`` keeps plain."""
        ids: list[int] = []
        for i, piece in enumerate(_SPLIT.split(text)):
            if i % 2:
                ids.append(SPECIAL_TOKENS[piece])
            elif piece:
                ids.extend(self._bpe.encode(piece, add_special_tokens=False).ids)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text for debugging: specials by their 3.1 names, audio ids as ``<audio qK:C>``."""
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if 0 <= i < TEXT_VOCAB_SIZE:
                run.append(i)
                continue
            if run:
                out.append(self._bpe.decode(run, skip_special_tokens=False))
                run = []
            out.append(_name_of(i))
        if run:
            out.append(self._bpe.decode(run, skip_special_tokens=False))
        return "".join(out)


def _name_of(i: int) -> str:
    if i in ID_TO_SPECIAL:
        return ID_TO_SPECIAL[i]
    if i >= AUDIO_BASE:
        k, c = divmod(i - AUDIO_BASE, CODEBOOK_SIZE)
        return f"<audio q{k}:{c}>"
    return f"<unknown id {i}>"
