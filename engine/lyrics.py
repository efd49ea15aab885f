"""Lyrics cleaning: the fixed character map of SPEC §5, then strip.

Choices where the spec leaves the target open (CJK punctuation):
  。｡ → "."   ，、､ → ","   ；→ ";"   ：→ ":"   ？→ "?"   ！→ "!"
  「」『』｢｣ and the book-title marks 《》〈〉 → '"' (they quote titles; "<>" would look
  like markup)   【】〔〕〖〗 → "[]"   （）→ "()"   …→ "..."   ‥ → ".."   〜 → "~"
Full-width forms are first folded to ASCII and then pass through the ASCII rules, so
"｜" becomes "-" and "＾" becomes "'" exactly like "|" and "^".
CJK characters themselves are kept.
"""

from __future__ import annotations

_ASCII_RULES = {"|": "-", "^": "'"}

_CJK_PUNCTUATION = {
    "。": ".", "｡": ".", "，": ",", "、": ",", "､": ",",
    "「": '"', "」": '"', "『": '"', "』": '"', "｢": '"', "｣": '"',
    "《": '"', "》": '"', "〈": '"', "〉": '"',
    "【": "[", "】": "]", "〔": "[", "〕": "]", "〖": "[", "〗": "]",
    "…": "...", "‥": "..", "〜": "~",
}

_QUOTES = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
}

_DASHES = {c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"}

_REMOVED = {c: "" for c in "\u200b\u200c\u200d\u2060\ufeff"}

_SPACES = {c: " " for c in "\u00a0\u202f\u3000"}

_LINE_BREAKS = {"\u2028": "\n", "\u2029": "\n"}

# Cyrillic and Greek capitals that look like Latin ones.
_LOOKALIKES = dict(zip("АВЕКМНОРСТХ", "ABEKMHOPCTX")) | dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX"))


def _build_table() -> dict[int, str]:
    table: dict[str, str] = {}
    for code in range(0xFF01, 0xFF5F):  # full-width ASCII block
        ascii_char = chr(code - 0xFEE0)
        table[chr(code)] = _ASCII_RULES.get(ascii_char, ascii_char)
    for part in (_CJK_PUNCTUATION, _QUOTES, _DASHES, _REMOVED, _SPACES, _LINE_BREAKS, _LOOKALIKES, _ASCII_RULES):
        table.update(part)
    return str.maketrans(table)


_TABLE = _build_table()


def clean_lyrics(text: str) -> str:
    """Normalise line ends to "\\n", apply the fixed character map, strip."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_TABLE).strip()
