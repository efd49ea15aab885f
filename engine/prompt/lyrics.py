"""Lyrics cleaning: the upstream Khala service's fixed character map, then strip (SPEC §5).

The model was conditioned on what the upstream service produced, so this reproduces the
upstream map exactly (Khala-Music-AI/Khala, backend/backend_api.py, commit cbc49ed), not
SPEC's prose summary; docs/LYRICS_CLEANING.md lists where the two differ.

Semantics that matter for exact ids:
* One left-to-right pass. A replacement's output is never looked at again, so
  full-width "＾" becomes "^" (not "'") even though ASCII "^" becomes "'".
* Where keys overlap, the longer one wins: "——" (two em dashes) is one "-", "———" is "--".
* Afterwards Python's str.strip() (Unicode whitespace) — nothing else is trimmed.

The one addition: "\\r\\n" and a lone "\\r" become "\\n" first. Upstream's lyrics arrive
from an HTML <textarea>, whose value never holds a CR, so this only makes pasted or
file-read text look like what upstream's UI would have sent.
"""

from __future__ import annotations

import re


def _pairs(sources: str, targets: str) -> dict[str, str]:
    assert len(sources) == len(targets), (sources, targets)
    return dict(zip(sources, targets))


# Full-width ASCII block U+FF01..U+FF5E to ASCII, with upstream's exceptions:
# ｛ ｜ ｝ (U+FF5B..U+FF5D) are not in its table, and ｀ (U+FF40) becomes an apostrophe.
_FULL_WIDTH = {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F) if c not in (0xFF5B, 0xFF5C, 0xFF5D)}
_FULL_WIDTH["\uff40"] = "'"

# CJK and other script punctuation. Note 『』 → "'" and 《》〈〉 → "<>", ・ → " ".
_CJK = (
    _pairs("。、「」『』《》〈〉【】〖〗・", ".,\"\"''<><>[][] ")
    | {"\u2026": "...", "\ufe4f": "_", "\u060c": ",", "\u2236": ":"}
)

# Quotes, primes and spacing accents.
_QUOTES = _pairs("\u2018\u2019\u201c\u201d\u2032\u02bc\u00b4\u00a8", "''\"\"'''\"")

# Dashes; the double em dash is a single key.
_DASHES = _pairs("\u2013\u2014\u2015\ufe63", "----") | {"\u2014\u2014": "-"}

# Other symbols and plain-ASCII rules.
_SYMBOLS = _pairs("\u00b7\u00d7\u00f7|^", ".x/-'")

# Spaces (U+2028 LINE SEPARATOR included: upstream makes it a space, not a line break).
_SPACES = {c: " " for c in "\u00a0\u3000\u2005\u2006\u2028"}

# Removed outright.
_REMOVED = {c: "" for c in "\u200b\ufeff\u202a\u202c\u180e\ue3ac\u2605"}

# Look-alikes: Cyrillic LOWERCASE (capitals are left alone) and Greek capitals.
_LOOKALIKES = _pairs("еаорсух", "eaopcyx") | _pairs("ΑΒΕΗΙΚΜΝΟΡΤΥΧΖ", "ABEHIKMNOPTYXZ")

# "’" (U+2019) UTF-8 encoded and decoded as Latin-1: three characters.
_MOJIBAKE = {"\u00e2\u0080\u0099": "'"}

REPLACEMENTS: dict[str, str] = {}
for _family in (_FULL_WIDTH, _CJK, _QUOTES, _DASHES, _SYMBOLS, _SPACES, _REMOVED, _LOOKALIKES, _MOJIBAKE):
    _overlap = REPLACEMENTS.keys() & _family.keys()
    assert not _overlap, _overlap
    REPLACEMENTS.update(_family)

# Longest keys first, so "——" is tried before "—" at the same position.
_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(REPLACEMENTS, key=len, reverse=True)))


def clean_lyrics(text: str) -> str:
    """CR/CRLF to LF, upstream's character map in one pass, then strip."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _PATTERN.sub(lambda m: REPLACEMENTS[m.group(0)], text).strip()
