"""Plain types shared by the engine and its callers (the app, the CLI).

Imports neither torch nor Qt, so the app can use them without loading the model stack.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import RequestError
from engine.prompt.lyrics import clean_lyrics

DURATION_RANGE = (0, 10)
TEMPERATURE_RANGE = (0.6, 1.4)
TOP_K_RANGE = (1, 200)
SAMPLE_RATE = 44_100
SAMPLES_PER_FRAME = 2048
UPSTREAM_TOKEN_CAP = 23_552  # backbone tokens generated at most, whatever the duration (SPEC §6)
TOKENS_PER_MINUTE = 2584
# The one rule for "what the song is", shared by the engine, the CLI and the app.
NO_META = "Say what the song is: give at least one tag, a description or a genre."
NO_LYRICS = "A sung song needs lyrics (or choose Instrumental)."
NO_LYRICS_LEFT = ("The lyrics are empty once cleaned: they hold only symbols the model never sees "
                  "(such as ★) or invisible characters. Write some words, or choose Instrumental.")


def expected_tokens(minutes: int) -> int:
    """The progress estimate of SPEC §6: 2584 × (d + 0.8) backbone tokens."""
    return int(TOKENS_PER_MINUTE * (minutes + 0.8))


def control_character(text: str, allowed: str = "") -> int | None:
    """Index of the first control character (Unicode category Cc: C0, DEL, C1) of ``text`` not in
    ``allowed``, or None. Format characters (a zero-width joiner inside an emoji, a right-to-left
    mark) are not control characters."""
    return next((i for i, c in enumerate(text) if unicodedata.category(c) == "Cc" and c not in allowed), None)


@dataclass(frozen=True)
class SongRequest:
    """What the user asked for. ``seed=None`` means pick one at random."""

    tags: str = ""
    description: str = ""
    genre: str = ""
    lyrics: str = ""
    instrumental: bool = False
    minutes: int = 2
    temperature: float = 1.0
    top_k: int = 80
    top_k_superres: int = 10
    seed: int | None = None
    variations: int = 1
    max_tokens: int | None = None

    def validate(self) -> None:
        """Raise RequestError naming the first field that is out of range.

        What is checked is what the model gets: lyrics are checked after ``clean_lyrics``, so
        lyrics that clean to nothing (only ★ and a zero-width space, say) are no lyrics."""
        lo, hi = DURATION_RANGE
        if not isinstance(self.minutes, int) or not lo <= self.minutes <= hi:
            raise RequestError(f"Duration must be a whole number of minutes from {lo} to {hi}; got {self.minutes!r}.")
        lo_t, hi_t = TEMPERATURE_RANGE
        if not (self.temperature == 0 or lo_t <= self.temperature <= hi_t):
            raise RequestError(f"Temperature must be 0 (greedy) or from {lo_t} to {hi_t}; got {self.temperature}.")
        lo_k, hi_k = TOP_K_RANGE
        if not lo_k <= self.top_k <= hi_k:
            raise RequestError(f"Top-k must be from {lo_k} to {hi_k}; got {self.top_k}.")
        if not 1 <= self.top_k_superres <= 1024:
            raise RequestError(f"Super-res top-k must be from 1 to 1024; got {self.top_k_superres}.")
        if not 1 <= self.variations <= 4:
            raise RequestError(f"Variations must be from 1 to 4; got {self.variations}.")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise RequestError(f"Seed must be a non-negative integer below 2**63; got {self.seed}.")
        if self.seed is not None and self.seed + self.variations - 1 >= 2**63:
            raise RequestError(f"Seed must be below 2**63 - {self.variations - 1} for {self.variations} variations "
                               f"(they use consecutive seeds); got {self.seed}.")
        if self.max_tokens is not None and not 2 <= self.max_tokens <= UPSTREAM_TOKEN_CAP:
            raise RequestError(f"Max tokens must be from 2 to {UPSTREAM_TOKEN_CAP:,}; got {self.max_tokens}.")
        for label, text in (("The tags contain", self.tags), ("The description contains", self.description),
                            ("The genre contains", self.genre), ("The lyrics contain", self.lyrics)):
            at = control_character(text, allowed="\t\n\r")
            if at is not None:
                raise RequestError(f"{label} a control character (U+{ord(text[at]):04X} at character "
                                   f"{at + 1}); remove it.")
        if not self.describes_song():
            raise RequestError(NO_META)
        if not self.instrumental:
            if not self.lyrics.strip():
                raise RequestError(NO_LYRICS)
            if not clean_lyrics(self.lyrics):
                raise RequestError(NO_LYRICS_LEFT)

    def describes_song(self) -> bool:
        """The rule for "what the song is": tags, a description or a genre, at least one with a letter
        or a digit (a lone comma or a zero-width space says nothing)."""
        return any(isinstance(f, str) and any(c.isalnum() for c in f) for f in (self.tags, self.description, self.genre))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SongRequest":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Continuation:
    """Continue (extend) or regenerate a song from a point (SPEC §12): keep frames 0..cut_frame-1 of
    ``codes`` (int [64, frames] of the parent song) and sample the rest. ``parent`` names the
    parent's audio file for the new song's sidecar, ``title`` its title."""

    codes: Any  # numpy int array [64, frames]
    cut_frame: int
    parent: str = ""
    title: str = ""  # the parent's title, for the new song's ("X (extended)")

    def validate(self, num_quantizers: int = 64, codebook_size: int = 1024) -> None:
        """RequestError naming what is wrong, before any model loads."""
        codes = self.codes
        shape = getattr(codes, "shape", ())
        kind = getattr(getattr(codes, "dtype", None), "kind", "")
        if len(shape) != 2 or shape[0] != num_quantizers or shape[1] < 1 or kind not in "iu":
            raise RequestError(f"The song's codes must be integers [{num_quantizers}, frames]; got "
                               f"{getattr(codes, 'dtype', type(codes).__name__)} {list(shape)}.")
        if int(codes.min()) < 0 or int(codes.max()) >= codebook_size:
            raise RequestError(f"The song's codes are outside 0..{codebook_size - 1}: they come from another "
                               "model's token layout.")
        frames = shape[1]
        if isinstance(self.cut_frame, bool) or not isinstance(self.cut_frame, int) or not 0 <= self.cut_frame <= frames:
            raise RequestError(f"The cut must be a frame from 0 to {frames} (the song's end); got {self.cut_frame!r}.")
