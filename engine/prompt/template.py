"""The backbone and super-res prompts (SPEC §5). Model-free and torch-free: the app
imports this for its live token count."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from engine.errors import PromptError, RequestError
from engine.prompt.lyrics import clean_lyrics
from engine.request import DURATION_RANGE, SongRequest
from engine.prompt.special_tokens import BOA_TEXT, BOL_TEXT, BOS_TEXT, EOL_TEXT, EOM_TEXT, EOT_TEXT, duration_token

BACKBONE_CAP = 4096
SUPERRES_CAP = 2048
INSTRUMENTAL = "Instrumental"
SUNG_LANGUAGE = ""  # the upstream UI sends no language for sung songs
EMPTY_PROMPT = "Say what the song is: give tags, a description or a genre."


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class PromptPair:
    """Both prompts. The texts are the full prompts; the ids are capped (see ``truncated``)."""

    backbone_text: str
    backbone_ids: list[int]
    superres_text: str
    superres_ids: list[int]
    truncated: list[str] = field(default_factory=list)


def _meta(*fields: str) -> str:
    return next((s.strip() for s in fields if s.strip()), "")


def _fill(meta: str, request: SongRequest) -> str:
    tail = EOM_TEXT + duration_token(request.minutes) + EOT_TEXT + BOA_TEXT
    if request.instrumental:
        return BOS_TEXT + meta + EOM_TEXT + INSTRUMENTAL + tail
    lyrics = clean_lyrics(request.lyrics).replace("\n", EOL_TEXT)
    return BOS_TEXT + meta + EOM_TEXT + SUNG_LANGUAGE + EOM_TEXT + BOL_TEXT + EOL_TEXT + lyrics + tail


def _check_duration(request: SongRequest) -> None:
    lo, hi = DURATION_RANGE
    m = request.minutes
    if isinstance(m, bool) or not isinstance(m, int) or not lo <= m <= hi:
        raise RequestError(f"Duration must be a whole number of minutes from {lo} to {hi}; got {m!r}.")


def _texts(request: SongRequest, require_meta: bool) -> tuple[str, str]:
    _check_duration(request)
    meta = _meta(request.description, request.tags, request.genre)
    if require_meta and not meta:
        raise PromptError(EMPTY_PROMPT)
    backbone = _fill(meta, request)
    if not request.description.strip():
        return backbone, backbone
    # "same_as_backbone_no_description": description dropped, tags blanked → genre.
    return backbone, _fill(_meta(request.genre), request)


def build_prompt_texts(request: SongRequest) -> tuple[str, str]:
    """(backbone prompt, super-res prompt) as text with Llama 3.1 special-token strings."""
    return _texts(request, require_meta=True)


def _cap(ids: list[int], cap: int, name: str, truncated: list[str]) -> list[int]:
    if len(ids) <= cap:
        return ids
    truncated.append(f"{name} prompt has {len(ids)} tokens, over its cap of {cap}: kept the first {cap - 1} "
                     f"and the last one, dropped {len(ids) - cap}.")
    return ids[: cap - 1] + ids[-1:]


def build_prompts(request: SongRequest, tokenizer: Encoder) -> PromptPair:
    backbone_text, superres_text = build_prompt_texts(request)
    truncated: list[str] = []
    backbone_ids = _cap(tokenizer.encode(backbone_text), BACKBONE_CAP, "backbone", truncated)
    superres_ids = _cap(tokenizer.encode(superres_text), SUPERRES_CAP, "super-res", truncated)
    return PromptPair(backbone_text, backbone_ids, superres_text, superres_ids, truncated)


def count_tokens(request: SongRequest, tokenizer: Encoder) -> dict[str, int]:
    """Uncapped prompt lengths for a live counter (a count above its cap means it will be cut).

    Unlike ``build_prompts`` it accepts an empty prompt, so the count works while typing."""
    backbone_text, superres_text = _texts(request, require_meta=False)
    return {
        "backbone": len(tokenizer.encode(backbone_text)),
        "superres": len(tokenizer.encode(superres_text)),
        "backbone_cap": BACKBONE_CAP,
        "superres_cap": SUPERRES_CAP,
    }


def read_lyrics_file(path: str | Path) -> str:
    """The text of a UTF-8 lyrics file (a leading BOM is allowed); PromptError otherwise."""
    path = Path(path)
    if not path.exists():
        raise PromptError(f"Lyrics file not found: {path}")
    if not path.is_file():
        raise PromptError(f"Lyrics file {path} is not a file.")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PromptError(f"Lyrics file {path} cannot be read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptError(f"Lyrics file {path} is not UTF-8 text (bad byte at offset {e.start}); save it as UTF-8.") from None
    if any(c in _BINARY for c in text):
        raise PromptError(f"Lyrics file {path} is not a text file (it contains binary control characters).")
    return text


_BINARY = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r\f\v")
