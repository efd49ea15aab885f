"""Lyrics cleaning: the fixed character map of SPEC §5."""

from __future__ import annotations

import pytest

from engine.lyrics import clean_lyrics


@pytest.mark.parametrize("raw, want", [
    # full-width ASCII
    ("ＡＢＣ　ｘｙｚ　０１２", "ABC xyz 012"),
    ("Ｈｅｌｌｏ！（ｗｏｒｌｄ）？", "Hello!(world)?"),
    # full-width forms follow the ASCII rules too
    ("a｜b＾c", "a-b'c"),
    # CJK punctuation
    ("你好，世界。", "你好,世界."),
    ("一、二、三", "一,二,三"),
    ("「引用」『二重』", '"引用""二重"'),
    ("【副歌】", "[副歌]"),
    ("《歌名》〈章〉", '"歌名""章"'),
    ("〔注〕〖标〗", "[注][标]"),
    ("等等…", "等等..."),
    ("さあ〜", "さあ~"),
    ("日本語｡ﾃｽﾄ､｢かぎ｣", '日本語.ﾃｽﾄ,"かぎ"'),
    # curly quotes
    ("\u2018single\u2019 \u201cdouble\u201d \u201alow\u201b \u201elow\u201f", "'single' \"double\" 'low' \"low\""),
    # dashes
    ("a\u2010b\u2011c\u2012d\u2013e\u2014f\u2015g", "a-b-c-d-e-f-g"),
    # zero-width and BOM removed
    ("\ufeffzero\u200bwidth\u200c\u200djoin\u2060ed", "zerowidthjoined"),
    # non-breaking and ideographic spaces
    ("a\u00a0b\u202fc\u3000d", "a b c d"),
    # ASCII rules
    ("one | two ^ three", "one - two ' three"),
    # line ends
    ("one\r\ntwo\rthree\nfour", "one\ntwo\nthree\nfour"),
])
def test_map_families(raw: str, want: str) -> None:
    assert clean_lyrics(raw) == want


def test_whole_full_width_block_maps_to_ascii() -> None:
    for code in range(0xFF01, 0xFF5F):
        ascii_char = chr(code - 0xFEE0)
        want = {"|": "-", "^": "'"}.get(ascii_char, ascii_char)
        assert clean_lyrics("x" + chr(code) + "x") == "x" + want + "x", hex(code)


def test_cyrillic_lookalike_capitals_to_latin() -> None:
    assert clean_lyrics("\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425") == "ABEKMHOPCTX"


def test_greek_lookalike_capitals_to_latin() -> None:
    greek = "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7"
    assert clean_lyrics(greek) == "ABEZHIKMNOPTYX"


def test_other_cyrillic_and_greek_letters_stay() -> None:
    text = "Привет мир П Я Ж а о р Δ Λ Ω α ο"
    assert clean_lyrics(text) == text


def test_strip_after_mapping() -> None:
    assert clean_lyrics("\u3000\u00a0 \ufeff\n  la la  \r\n\u200b") == "la la"
    assert clean_lyrics("  \n\n ") == ""


def test_inner_lines_and_spacing_kept() -> None:
    assert clean_lyrics("  line one  \n\n  line two") == "line one  \n\n  line two"


def test_cjk_characters_preserved() -> None:
    text = "我爱你 사랑해 愛してる カタカナ・ひらがな"
    assert clean_lyrics(text) == text


def test_plain_ascii_unchanged() -> None:
    text = "Verse 1:\nWe're up all night (to get lucky) - 100% [x2] \"yeah\" <3 ~ & * # @"
    assert clean_lyrics(text) == text
