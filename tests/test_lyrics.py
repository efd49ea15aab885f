"""Lyrics cleaning: the upstream Khala service's character map (SPEC §5, docs/LYRICS_CLEANING.md).

Expectations are written out from the upstream table (Khala-Music-AI/Khala,
backend/backend_api.py), family by family, independently of engine/lyrics.py.
"""

from __future__ import annotations

import pytest

from engine.prompt.lyrics import clean_lyrics

FULL_WIDTH = {
    "！": "!", "＂": '"', "＃": "#", "＄": "$", "％": "%", "＆": "&", "＇": "'", "（": "(", "）": ")",
    "＊": "*", "＋": "+", "，": ",", "－": "-", "．": ".", "／": "/",
    "０": "0", "１": "1", "２": "2", "３": "3", "４": "4", "５": "5", "６": "6", "７": "7", "８": "8", "９": "9",
    "：": ":", "；": ";", "＜": "<", "＝": "=", "＞": ">", "？": "?", "＠": "@",
    "ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "［": "[", "＼": "\\", "］": "]", "＾": "^", "＿": "_", "｀": "'",
    "ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ": "abcdefghijklmnopqrstuvwxyz",
    "～": "~",
}
CJK = {
    "。": ".", "、": ",", "「": '"', "」": '"', "『": "'", "』": "'", "《": "<", "》": ">", "〈": "<", "〉": ">",
    "【": "[", "】": "]", "〖": "[", "〗": "]", "・": " ", "…": "...", "﹏": "_", "،": ",", "∶": ":",
}
QUOTES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2032": "'", "\u02bc": "'",
          "\u00b4": "'", "\u00a8": '"'}
DASHES = {"\u2013": "-", "\u2014": "-", "\u2015": "-", "\ufe63": "-"}
SYMBOLS = {"\u00b7": ".", "\u00d7": "x", "\u00f7": "/", "|": "-", "^": "'"}
SPACES = {"\u00a0": " ", "\u3000": " ", "\u2005": " ", "\u2006": " ", "\u2028": " "}
REMOVED = {"\u200b": "", "\ufeff": "", "\u202a": "", "\u202c": "", "\u180e": "", "\ue3ac": "", "\u2605": ""}
CYRILLIC_LOWER = {"\u0435\u0430\u043e\u0440\u0441\u0443\u0445": "eaopcyx"}
GREEK_CAPITALS = {"\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7":
                  "ABEZHIKMNOPTYX"}

FAMILIES = {"full_width": FULL_WIDTH, "cjk": CJK, "quotes": QUOTES, "dashes": DASHES, "symbols": SYMBOLS,
            "spaces": SPACES, "removed": REMOVED, "cyrillic_lower": CYRILLIC_LOWER,
            "greek_capitals": GREEK_CAPITALS}
SINGLE_KEYS = {c for family in FAMILIES.values() for k in family for c in k}


@pytest.mark.parametrize("family", FAMILIES)
def test_map_family(family: str) -> None:
    for raw, want in FAMILIES[family].items():
        assert clean_lyrics("x" + raw + "x") == "x" + want + "x", (family, raw)
        # twice in a row too ("——" is its own key: see test_double_em_dash)
        if raw != "\u2014":
            assert clean_lyrics("x" + raw * 2 + "x") == "x" + want * 2 + "x", (family, raw)


def test_upstream_table_size() -> None:
    # 160 single characters + "——" + the three-character mojibake apostrophe = upstream's
    # 162 keys (its dict literal has 163 entries; '\xa0' and '\u00a0' are the same key).
    assert len(SINGLE_KEYS) == 160


def test_every_other_character_unchanged() -> None:
    """Nothing outside the upstream table is touched (the old extras included)."""
    for code in range(0x110000):
        char = chr(code)
        if 0xD800 <= code < 0xE000 or char in SINGLE_KEYS or char == "\r":
            continue
        assert clean_lyrics("x" + char + "x") == "x" + char + "x", hex(code)


@pytest.mark.parametrize("raw", [
    "\u201a\u201e\u201f\u201b\u2033",          # low / reversed quotes, double prime
    "\u2010\u2011\u2012\u2212",                # hyphen, non-breaking hyphen, figure dash, minus
    "\u200c\u200d\u2060\u202f\u2029",          # ZWNJ, ZWJ, word joiner, narrow NBSP, paragraph sep.
    "\uff61\uff64\uff62\uff63",                # halfwidth ｡ ､ ｢ ｣
    "〔〕‥〜",                                  # tortoise brackets, two-dot leader, wave dash
    "｛｜｝",                                    # full-width braces and bar are not in the table
    "АВЕКМНОРСТХ",                              # Cyrillic capitals
    "αβεοκ Δ Λ Ω Ж Я б в г д ж з и й л м н п т ф ц ч ш щ ы э ю я",
])
def test_characters_upstream_leaves_alone(raw: str) -> None:
    assert clean_lyrics("x" + raw + "x") == "x" + raw + "x"


def test_mixed_cyrillic_word() -> None:
    # lowercase look-alikes change, capitals and other letters stay
    assert clean_lyrics("\u0421\u043e\u0440\u0435\u0445") == "\u0421opex"
    assert clean_lyrics("Привет мир") == "Пpивeт миp"


@pytest.mark.parametrize("raw, want", [
    ("a——b", "a-b"),          # double em dash is one key → one "-"
    ("a———b", "a--b"),        # "——" then "—"
    ("a————b", "a--b"),
    ("a—\u200b—b", "a--b"),   # not adjacent in the input: two single em dashes
])
def test_double_em_dash(raw: str, want: str) -> None:
    assert clean_lyrics(raw) == want


def test_mojibake_apostrophe() -> None:
    assert clean_lyrics("don\u00e2\u0080\u0099t") == "don't"
    # only the full three-character sequence
    for partial in ("\u00e2\u0080", "\u00e2\u0099", "\u0080\u0099", "\u00e2\u20ac\u2122"):
        assert clean_lyrics("x" + partial + "x") == "x" + partial + "x", ascii(partial)


def test_single_pass_outputs_not_remapped() -> None:
    # "＾" → "^" stays "^" although "^" itself maps to "'"; "｜" is not mapped at all
    assert clean_lyrics("a＾b^c｜d|e") == "a^b'c｜d-e"


def test_strip_after_mapping() -> None:
    assert clean_lyrics("\u3000\u00a0 \ufeff\n  la la  \n\u200b\u2605") == "la la"
    assert clean_lyrics("  \n\n ") == ""
    # Python's str.strip: Unicode whitespace the map leaves alone is trimmed at the ends only
    assert clean_lyrics("\u2029\u202fla\u2029la\u202f\u2029") == "la\u2029la"


def test_line_separator_is_a_space_not_a_line_break() -> None:
    assert clean_lyrics("one\u2028two") == "one two"


def test_carriage_returns_become_line_feeds() -> None:
    assert clean_lyrics("one\r\ntwo\rthree\nfour\r\n") == "one\ntwo\nthree\nfour"


def test_inner_lines_and_spacing_kept() -> None:
    assert clean_lyrics("  line one  \n\n  line two") == "line one  \n\n  line two"


def test_realistic_mixed_lyrics() -> None:
    raw = "\ufeff【副歌】\n我爱你，《夜曲》——“永远”！\nＨｅｌｌｏ · ｗｏｒｌｄ…\n『いいね』・ok\n"
    assert clean_lyrics(raw) == "[副歌]\n我爱你,<夜曲>-\"永远\"!\nHello . world...\n'いいね' ok"


def test_cjk_characters_preserved() -> None:
    text = "我爱你 사랑해 愛してる カタカナ ひらがな"
    assert clean_lyrics(text) == text


def test_plain_ascii_unchanged() -> None:
    text = "Verse 1:\nWe're up all night (to get lucky) - 100% [x2] \"yeah\" <3 ~ & * # @ ` {} \\"
    assert clean_lyrics(text) == text
