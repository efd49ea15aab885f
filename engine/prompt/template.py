"""The backbone and super-res prompts (SPEC §5). Model-free and torch-free: the app
imports this for its live token count.

A prompt is built as a sequence of pieces: template special tokens, inserted by id, and
text, BPE-encoded as plain text. Every user field (tags, description, genre, each lyric
line) is a text piece, so a special-token string a user types is encoded as its
characters and never becomes a control token. Under ordinary input (no special-token
strings) the ids are exactly upstream's ``encode(prompt_text)``: upstream's tokenizer
splits the text at the special tokens and BPE-encodes each segment on its own, and the
segments are the same pieces.

Over a cap, whole lyric lines are cut from the end of the lyrics; the template's tail
(EOM, DUR(d), EOT, BOA) always stays (SPEC §5 "Length caps").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, Union

from engine.errors import PromptError, RequestError
from engine.prompt.lyrics import clean_lyrics
from engine.prompt.special_tokens import BOA, BOL, BOS, EOL, EOM, EOT, ID_TO_SPECIAL, duration_id
from engine.request import DURATION_RANGE, NO_META, SongRequest

BACKBONE_CAP = 4096
SUPERRES_CAP = 2048
INSTRUMENTAL = "Instrumental"
SUNG_LANGUAGE = ""  # the upstream UI sends no language for sung songs
EMPTY_PROMPT = NO_META


class Encoder(Protocol):
    def encode_text(self, text: str) -> list[int]:
        """Plain-text BPE: never a special-token id, whatever the text holds."""
        ...


Piece = Union[int, str]  # a special-token id inserted by the template, or text to BPE-encode


@dataclass(frozen=True)
class PromptPair:
    """Both prompts. The texts are the full prompts; the ids are what the model gets, cut to
    their caps (BACKBONE_CAP, SUPERRES_CAP) by dropping lyric lines from the end.

    ``truncated`` holds one sentence per cut prompt; ``backbone_dropped_lines`` and
    ``superres_dropped_lines`` count the non-blank lyric lines each prompt lost."""

    backbone_text: str
    backbone_ids: list[int]
    superres_text: str
    superres_ids: list[int]
    truncated: list[str] = field(default_factory=list)
    backbone_dropped_lines: int = 0
    superres_dropped_lines: int = 0

    @property
    def dropped_lines(self) -> int:
        """Lyric lines missing from at least one prompt (the super-res cap is the smaller)."""
        return max(self.backbone_dropped_lines, self.superres_dropped_lines)


@dataclass(frozen=True)
class _Layout:
    """One prompt: ``head``, then EOL + line for each lyric line (sung only), then ``tail``.

    sung:         BOS meta EOM lang EOM BOL | EOL line … | EOM DUR(d) EOT BOA
    instrumental: BOS meta EOM Instrumental | (no lines)  | EOM DUR(d) EOT BOA
    """

    head: tuple[Piece, ...]
    lines: tuple[str, ...]
    tail: tuple[Piece, ...]
    meta_field: str  # "description", "tags", "genre" or "" (which field ``head[1]`` came from)

    def text(self) -> str:
        body = "".join(ID_TO_SPECIAL[EOL] + line for line in self.lines)
        return _text(self.head) + body + _text(self.tail)


def _text(pieces: Sequence[Piece]) -> str:
    return "".join(ID_TO_SPECIAL[p] if isinstance(p, int) else p for p in pieces)


def _meta(request: SongRequest, fields: Sequence[str]) -> tuple[str, str]:
    """(the first non-empty of ``fields``, stripped; its name): SPEC §5's ``meta``."""
    for name in fields:
        value = getattr(request, name).strip()
        if value:
            return value, name
    return "", ""


def _layout(request: SongRequest, fields: Sequence[str]) -> _Layout:
    meta, meta_field = _meta(request, fields)
    tail = (EOM, duration_id(request.minutes), EOT, BOA)
    if request.instrumental:
        return _Layout((BOS, meta, EOM, INSTRUMENTAL), (), tail, meta_field)
    lines = tuple(clean_lyrics(request.lyrics).split("\n"))
    return _Layout((BOS, meta, EOM, SUNG_LANGUAGE, EOM, BOL), lines, tail, meta_field)


def _check_duration(request: SongRequest) -> None:
    lo, hi = DURATION_RANGE
    m = request.minutes
    if isinstance(m, bool) or not isinstance(m, int) or not lo <= m <= hi:
        raise RequestError(f"Duration must be a whole number of minutes from {lo} to {hi}; got {m!r}.")


def _layouts(request: SongRequest, require_meta: bool) -> tuple[_Layout, _Layout]:
    _check_duration(request)
    backbone = _layout(request, ("description", "tags", "genre"))
    if require_meta and not backbone.meta_field:
        raise PromptError(EMPTY_PROMPT)
    if not request.description.strip():
        return backbone, backbone
    # "same_as_backbone_no_description": description dropped, tags blanked → genre.
    return backbone, _layout(request, ("genre",))


def build_prompt_texts(request: SongRequest) -> tuple[str, str]:
    """(backbone prompt, super-res prompt) as text with Llama 3.1 special-token strings.

    For display only: the ids come from ``build_prompts``, which never reads user text as a
    special token."""
    backbone, superres = _layouts(request, require_meta=True)
    return backbone.text(), superres.text()


@dataclass(frozen=True)
class _Cut:
    ids: list[int]
    full_length: int  # tokens before any cut
    dropped_lines: int  # non-blank lyric lines cut
    note: str | None  # the sentence for PromptPair.truncated, None when nothing was cut


def _encode(pieces: Sequence[Piece], encoder: Encoder) -> list[int]:
    ids: list[int] = []
    for p in pieces:
        ids.extend([p] if isinstance(p, int) else encoder.encode_text(p) if p else [])
    return ids


def _lines_word(n: int) -> str:
    return f"{n:,} lyric line" + ("" if n == 1 else "s")


def _cut(layout: _Layout, encoder: Encoder, cap: int, name: str) -> _Cut:
    """The layout's ids, cut to ``cap`` by dropping whole lyric lines from the end.

    The kept ids are exactly those of the same request with only the kept lines (trailing
    blank lines go with the cut, as cleaning would strip them). If the prompt is over the cap
    even with no lyrics, the meta field's text is cut too, keeping its first tokens."""
    head, tail = _encode(layout.head, encoder), _encode(layout.tail, encoder)
    line_ids = [encoder.encode_text(line) if line else [] for line in layout.lines]
    full = len(head) + sum(1 + len(ids) for ids in line_ids) + len(tail)
    if full <= cap:
        body = [i for ids in line_ids for i in [EOL, *ids]]
        return _Cut(head + body + tail, full, 0, None)
    # The longest prefix of lines that fits; ``sizes[k]`` is the body length of lines[:k].
    keep, body_len, sizes = 0, 0, [0]
    for ids in line_ids:
        body_len += 1 + len(ids)
        sizes.append(body_len)
    for k in range(len(line_ids), -1, -1):
        kept = _trim_blank(layout.lines, k)
        body = sizes[kept] if kept else (1 if layout.lines else 0)  # no lines left: the empty-lyrics EOL
        if len(head) + body + len(tail) <= cap:
            keep = kept
            break
    else:
        keep = -1  # even no lyrics is over the cap
    dropped = sum(1 for line in layout.lines[max(keep, 0):] if line.strip())
    empty_body = [EOL] if layout.lines else []
    if keep >= 0:
        body = [i for ids in line_ids[:keep] for i in [EOL, *ids]] if keep else empty_body
        ids = head + body + tail
        return _Cut(ids, full, dropped, f"{name} prompt is {full:,} tokens, over its cap of {cap:,}: dropped "
                                        f"the last {dropped:,} of {_lines_word(_count(layout.lines))} (the duration "
                                        "and the end of the prompt are kept).")
    meta_ids = encoder.encode_text(layout.head[1]) if layout.head[1] else []
    fixed = len(head) - len(meta_ids) + len(empty_body) + len(tail)
    budget = max(0, cap - fixed)
    ids = [BOS, *meta_ids[:budget], *head[1 + len(meta_ids):], *empty_body, *tail]
    lyrics_part = f"dropped all {_lines_word(dropped)} and " if dropped else ""
    return _Cut(ids, full, dropped, f"{name} prompt is {full:,} tokens, over its cap of {cap:,} even without "
                                    f"lyrics: {lyrics_part}cut the {layout.meta_field or 'meta'} to its first "
                                    f"{budget:,} of {len(meta_ids):,} tokens (the duration and the end of the "
                                    "prompt are kept).")


def _count(lines: Sequence[str]) -> int:
    return sum(1 for line in lines if line.strip())


def _trim_blank(lines: Sequence[str], k: int) -> int:
    """``k`` less the blank lines that would end lines[:k]."""
    while k > 0 and not lines[k - 1].strip():
        k -= 1
    return k


def build_prompts(request: SongRequest, tokenizer: Encoder) -> PromptPair:
    """Both prompts' texts and ids (see the module docstring); PromptError for an empty prompt,
    RequestError for a duration the template cannot express."""
    backbone, superres = _layouts(request, require_meta=True)
    b = _cut(backbone, tokenizer, BACKBONE_CAP, "backbone")
    s = _cut(superres, tokenizer, SUPERRES_CAP, "super-res")
    notes = [c.note for c in (b, s) if c.note]
    return PromptPair(backbone.text(), b.ids, superres.text(), s.ids, notes, b.dropped_lines, s.dropped_lines)


def count_tokens(request: SongRequest, tokenizer: Encoder) -> dict[str, int]:
    """Uncapped prompt lengths for a live counter (a count above its cap means it will be cut),
    and ``dropped_lines``: how many lyric lines the cut would leave out of either prompt.

    Unlike ``build_prompts`` it accepts an empty prompt, so the count works while typing."""
    backbone, superres = _layouts(request, require_meta=False)
    b = _cut(backbone, tokenizer, BACKBONE_CAP, "backbone")
    s = _cut(superres, tokenizer, SUPERRES_CAP, "super-res")
    return {
        "backbone": b.full_length,
        "superres": s.full_length,
        "backbone_cap": BACKBONE_CAP,
        "superres_cap": SUPERRES_CAP,
        "dropped_lines": max(b.dropped_lines, s.dropped_lines),
    }


# A 4,096-token prompt holds about 16 kB of lyrics; a file 60 times that is not lyrics.
MAX_LYRICS_FILE_BYTES = 1_000_000


def read_lyrics_file(path: str | Path) -> str:
    """The text of a UTF-8 lyrics file (a leading BOM is allowed), taken literally: a backslash
    followed by ``n`` stays two characters. PromptError (one line, naming the file) for a
    missing file, a folder, a file over MAX_LYRICS_FILE_BYTES, non-UTF-8 or binary content."""
    path = Path(path)
    if not path.exists():
        raise PromptError(f"Lyrics file not found: {path}")
    if not path.is_file():
        raise PromptError(f"Lyrics file {path} is not a file.")
    try:
        size = path.stat().st_size
        if size > MAX_LYRICS_FILE_BYTES:
            raise PromptError(f"Lyrics file {path} is {size / 1e6:.1f} MB; a lyrics file is at most "
                              f"{MAX_LYRICS_FILE_BYTES / 1e6:.0f} MB of text.")
        with path.open("rb") as f:
            data = f.read(MAX_LYRICS_FILE_BYTES + 1)  # a file that grows meanwhile is still bounded
        if len(data) > MAX_LYRICS_FILE_BYTES:
            raise PromptError(f"Lyrics file {path} is over {MAX_LYRICS_FILE_BYTES / 1e6:.0f} MB; "
                              "a lyrics file is at most that much text.")
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
