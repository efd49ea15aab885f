"""Prompt templates, ids, caps and errors (SPEC §5).

Expected ids are hand-assembled: special ids written out as numbers, text pieces as
ids of the plain Llama-3 BPE (the tokenizers library on the bare text piece).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RawTokenizer

from engine.errors import PromptError, RequestError
from engine.prompt.template import (BACKBONE_CAP, SUPERRES_CAP, PromptPair, build_prompt_texts, build_prompts,
                           count_tokens, read_lyrics_file)
from engine.request import SongRequest
from engine.prompt.tokenizer import Tokenizer
from tokenizer_files import llama31_tokenizer_json, llama32_tokenizer_json

BOS, EOM, BOL, EOL, EOT, BOA = 128000, 128008, 128006, 128007, 128009, 128010
DUR = {0: 128002, 1: 128003, 2: 128005, 3: 128011, 4: 128012, 5: 128013, 6: 128014, 7: 128015,
       8: 128016, 9: 128017, 10: 128018}
S = {"BOS": "<|begin_of_text|>", "EOM": "<|eom_id|>", "BOL": "<|start_header_id|>",
     "EOL": "<|end_header_id|>", "EOT": "<|eot_id|>", "BOA": "<|python_tag|>"}


def dur(n: int) -> str:
    return f"<|reserved_special_token_{n}|>"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_file(llama32_tokenizer_json())


@pytest.fixture(scope="module")
def bpe():
    raw = RawTokenizer.from_file(str(llama32_tokenizer_json()))
    return lambda text: raw.encode(text, add_special_tokens=False).ids


SUNG = SongRequest(tags="Pop, Piano, Female Vocals", genre="Ambient", lyrics="Hello world\nGood night, moon", minutes=2)
DESCRIBED = SongRequest(description="A calm piano song about the sea", tags="Pop, Piano, Female Vocals",
                        genre="Ambient", lyrics="Hello world", minutes=3)
INSTRUMENTAL = SongRequest(tags="Lo-fi, Chill", lyrics="ignored words", instrumental=True, minutes=5)


# -- texts ------------------------------------------------------------------------------

def test_sung_tag_mode_text() -> None:
    want = (S["BOS"] + "Pop, Piano, Female Vocals" + S["EOM"] + S["EOM"] + S["BOL"] + S["EOL"]
            + "Hello world" + S["EOL"] + "Good night, moon" + S["EOM"] + dur(2) + S["EOT"] + S["BOA"])
    assert build_prompt_texts(SUNG) == (want, want)


def test_description_text_and_superres_falls_back_to_genre() -> None:
    tail = S["EOM"] + S["EOM"] + S["BOL"] + S["EOL"] + "Hello world" + S["EOM"] + dur(3) + S["EOT"] + S["BOA"]
    backbone, superres = build_prompt_texts(DESCRIBED)
    assert backbone == S["BOS"] + "A calm piano song about the sea" + tail
    assert superres == S["BOS"] + "Ambient" + tail


def test_description_without_genre_gives_empty_superres_meta() -> None:
    req = SongRequest(description="  a sad song ", tags="Rock", lyrics="la", minutes=1)
    backbone, superres = build_prompt_texts(req)
    tail = S["EOM"] + S["EOM"] + S["BOL"] + S["EOL"] + "la" + S["EOM"] + dur(1) + S["EOT"] + S["BOA"]
    assert backbone == S["BOS"] + "a sad song" + tail
    assert superres == S["BOS"] + tail


def test_tag_mode_prompts_identical_even_with_a_genre() -> None:
    req = SongRequest(tags=" Rock ", genre="Jazz", description="   ", lyrics="la", minutes=4)
    backbone, superres = build_prompt_texts(req)
    assert backbone == superres
    assert backbone.startswith(S["BOS"] + "Rock" + S["EOM"])


def test_genre_only() -> None:
    backbone, superres = build_prompt_texts(SongRequest(genre=" Jazz ", lyrics="la"))
    assert backbone == superres and backbone.startswith(S["BOS"] + "Jazz" + S["EOM"])


def test_instrumental_text_ignores_lyrics() -> None:
    want = S["BOS"] + "Lo-fi, Chill" + S["EOM"] + "Instrumental" + S["EOM"] + dur(5) + S["EOT"] + S["BOA"]
    assert build_prompt_texts(INSTRUMENTAL) == (want, want)


def test_instrumental_description_superres() -> None:
    req = SongRequest(description="rainy night", tags="Lo-fi", genre="Jazz", instrumental=True, minutes=2)
    tail = S["EOM"] + "Instrumental" + S["EOM"] + dur(2) + S["EOT"] + S["BOA"]
    assert build_prompt_texts(req) == (S["BOS"] + "rainy night" + tail, S["BOS"] + "Jazz" + tail)


def test_lyrics_are_cleaned_stripped_and_lines_become_eol() -> None:
    req = SongRequest(tags="Pop", lyrics="\ufeff  第一行，\r\n“second” | line\r\n\n  ", minutes=2)
    backbone, _ = build_prompt_texts(req)
    body = backbone.split(S["BOL"] + S["EOL"], 1)[1].split(S["EOM"], 1)[0]
    assert body == "第一行," + S["EOL"] + '"second" - line'


# -- exact ids --------------------------------------------------------------------------

def test_sung_tag_mode_ids(tok: Tokenizer) -> None:
    want = ([BOS, 11859, 11, 56491, 11, 29738, 87145, 1147, EOM, EOM, BOL, EOL,
             9906, 1917, EOL, 15571, 3814, 11, 18266, EOM, 128005, EOT, BOA])
    pair = build_prompts(SUNG, tok)
    assert pair.backbone_ids == want and pair.superres_ids == want and pair.truncated == []


def test_description_ids(tok: Tokenizer, bpe) -> None:
    pair = build_prompts(DESCRIBED, tok)
    tail = [EOM, EOM, BOL, EOL] + bpe("Hello world") + [EOM, DUR[3], EOT, BOA]
    assert pair.backbone_ids == [BOS, 32, 19858, 27374, 5609, 922, 279, 9581] + tail
    assert pair.superres_ids == [BOS] + bpe("Ambient") + tail
    assert bpe("Ambient") == [55132, 1188]


def test_instrumental_ids(tok: Tokenizer) -> None:
    want = [BOS, 4357, 37731, 11, 87589, EOM, 57424, 278, EOM, 128013, EOT, BOA]
    pair = build_prompts(INSTRUMENTAL, tok)
    assert pair.backbone_ids == want and pair.superres_ids == want


@pytest.mark.parametrize("minutes", range(11))
def test_every_duration_id(tok: Tokenizer, minutes: int) -> None:
    for instrumental in (False, True):
        req = SongRequest(tags="Pop", lyrics="la", instrumental=instrumental, minutes=minutes)
        pair = build_prompts(req, tok)
        assert pair.backbone_ids[-3:] == [DUR[minutes], EOT, BOA]
        assert pair.superres_ids[-3:] == [DUR[minutes], EOT, BOA]
        assert dur(minutes) in pair.backbone_text


def test_32_and_31_files_give_identical_prompt_ids(tmp_path: Path, tok: Tokenizer) -> None:
    tok31 = Tokenizer.from_file(llama31_tokenizer_json(tmp_path))
    for req in (SUNG, DESCRIBED, INSTRUMENTAL):
        assert build_prompts(req, tok31) == build_prompts(req, tok)


def test_image_token_never_produced(tok: Tokenizer) -> None:
    req = SongRequest(tags="<|image|> Pop", description="", lyrics="<|image|>\n<|step_id|>", minutes=2)
    pair = build_prompts(req, tok)
    assert all(i < 128256 for i in pair.backbone_ids + pair.superres_ids)
    assert 128005 == pair.backbone_ids[-3]  # the only 128005 is the duration
    assert pair.backbone_ids.count(128005) == 1


def test_ordinary_input_gives_upstreams_ids(tok: Tokenizer) -> None:
    """Upstream encodes the whole prompt text (special strings → ids, the rest BPE)."""
    for req in (SUNG, DESCRIBED, INSTRUMENTAL, SongRequest(genre="Jazz", lyrics="a\n\nb  c", minutes=0)):
        pair = build_prompts(req, tok)
        assert pair.backbone_ids == tok.encode(pair.backbone_text)
        assert pair.superres_ids == tok.encode(pair.superres_text)


# -- user text is never a control token ------------------------------------------------

@pytest.fixture(scope="module")
def literal():
    """BPE of the literal characters, bypassing the file's added (special) tokens entirely:
    the file's own pre-tokenizer and BPE model, piece by piece."""
    raw = RawTokenizer.from_file(str(llama32_tokenizer_json()))
    return lambda text: [t.id for piece, _ in raw.pre_tokenizer.pre_tokenize_str(text) for t in raw.model.tokenize(piece)]


def test_eot_in_tags_is_its_characters(tok: Tokenizer, literal) -> None:
    # "Pop<|eot_id|>": Pop, "<", "|", "e", "ot", "_id", "|", ">" — not Pop, 128009.
    want_tags = [11859, 27, 91, 68, 354, 851, 91, 29]
    assert literal("Pop<|eot_id|>") == want_tags
    pair = build_prompts(SongRequest(tags="Pop<|eot_id|>", lyrics="la"), tok)
    assert pair.backbone_ids == [BOS, *want_tags, EOM, EOM, BOL, EOL, 4355, EOM, DUR[2], EOT, BOA]
    assert "Pop<|eot_id|>" in pair.backbone_text  # the text shown is the text typed


@pytest.mark.parametrize("field", ["tags", "description", "genre", "lyrics"])
def test_every_special_token_string_in_every_field_is_plain_text(tok: Tokenizer, literal, field: str) -> None:
    from engine.prompt.lyrics import clean_lyrics
    from engine.prompt.special_tokens import SPECIAL_TOKENS

    assert len(SPECIAL_TOKENS) == 256
    for special in SPECIAL_TOKENS:
        typed = f"Pop {special}x"
        fields = {"tags": "Rock", "lyrics": "la"} | {field: typed}
        if field == "genre":
            fields.pop("tags")
        pair = build_prompts(SongRequest(minutes=2, **fields), tok)
        if field == "lyrics":
            # cleaning maps "|" to "-" first, so the model gets e.g. "Pop <-eot_id->x"
            head, body = [BOS, *literal("Rock"), EOM, EOM, BOL, EOL], literal(clean_lyrics(typed))
        else:
            head, body = [BOS, *literal(typed), EOM, EOM, BOL, EOL], literal("la")
        want = head + body + [EOM, DUR[2], EOT, BOA]
        assert pair.backbone_ids == want, special
        if field != "description":
            assert pair.superres_ids == want, special
        assert [i for i in pair.backbone_ids if i >= 128000] == [BOS, EOM, EOM, BOL, EOL, EOM, DUR[2], EOT, BOA]


def test_lyrics_special_strings_are_plain_text_even_without_cleaning(tok: Tokenizer, literal, monkeypatch) -> None:
    """Defence in depth: were the lyrics map to stop rewriting "|", a lyric line would still
    be BPE text."""
    from engine.prompt import template

    monkeypatch.setattr(template, "clean_lyrics", lambda text: text.strip())
    pair = build_prompts(SongRequest(tags="Pop", lyrics="a<|eot_id|>\n<|python_tag|>"), tok)
    assert pair.backbone_ids == ([BOS, *literal("Pop"), EOM, EOM, BOL, EOL, *literal("a<|eot_id|>"), EOL,
                                  *literal("<|python_tag|>"), EOM, DUR[2], EOT, BOA])


# -- caps -------------------------------------------------------------------------------

class CountingEncoder:
    """One id per character: makes prompt lengths exact for boundary tests. Same interface as
    Tokenizer.encode_text (test_counting_encoder_has_the_tokenizer_interface)."""

    def encode_text(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def test_counting_encoder_has_the_tokenizer_interface(tok: Tokenizer) -> None:
    for encoder in (tok, CountingEncoder()):
        ids = encoder.encode_text("Hello <|eot_id|>")
        assert ids and all(isinstance(i, int) and 0 <= i < 128000 for i in ids)
        assert encoder.encode_text("") == []


TAIL2 = [EOM, DUR[2], EOT, BOA]


def _request_of_length(n: int) -> SongRequest:
    """A tag-mode request whose prompts are ``n`` CountingEncoder ids long: BOS x EOM EOM BOL
    (5) + EOL lyrics + EOM DUR EOT BOA (4)."""
    return SongRequest(tags="x", lyrics="y" * (n - 10), minutes=2)


@pytest.mark.parametrize("n", [SUPERRES_CAP - 1, SUPERRES_CAP])
def test_at_cap_nothing_is_cut(n: int) -> None:
    pair = build_prompts(_request_of_length(n), CountingEncoder())
    assert len(pair.backbone_ids) == len(pair.superres_ids) == n and pair.truncated == []
    assert pair.dropped_lines == 0


def test_cut_drops_whole_lyric_lines_from_the_end_and_keeps_the_tail() -> None:
    # 30 lines of 99 characters: 5 + 30 x (1 + 99) + 4 = 3009 ids. The backbone (cap 4096)
    # is whole; the super-res prompt (cap 2048) keeps 20 lines: 5 + 2000 + 4 = 2009 ids.
    lines = [chr(ord("a") + i % 26) * 99 for i in range(30)]
    req = SongRequest(tags="x", lyrics="\n".join(lines), minutes=2)
    pair = build_prompts(req, CountingEncoder())
    assert len(pair.backbone_ids) == 3009 and pair.backbone_dropped_lines == 0
    assert len(pair.superres_ids) == 2009 and pair.superres_dropped_lines == 10 and pair.dropped_lines == 10
    kept = SongRequest(tags="x", lyrics="\n".join(lines[:20]), minutes=2)
    assert pair.superres_ids == build_prompts(kept, CountingEncoder()).superres_ids
    assert pair.superres_ids[-4:] == TAIL2
    assert pair.truncated == ["super-res prompt is 3,009 tokens, over its cap of 2,048: dropped the last 10 of "
                              "30 lyric lines (the duration and the end of the prompt are kept)."]
    assert pair.superres_text == pair.backbone_text == build_prompt_texts(req)[1]  # the text stays whole


def test_cut_takes_trailing_blank_lines_with_it_and_counts_only_sung_lines() -> None:
    # lines: 1030 a's, blank, blank, 1030 b's, 1030 c's. Super-res: 5 + 1031 + 4 = 1040 fits,
    # adding the two blank lines and the b's would not (5 + 1031 + 2 + 1031 + 4 = 2073 > 2048):
    # b's and c's are dropped, and the blank lines before them go too (the kept prompt is that
    # of lyrics "a" * 1030).
    req = SongRequest(tags="x", lyrics="\n".join(["a" * 1030, "", "", "b" * 1030, "c" * 1030]), minutes=2)
    pair = build_prompts(req, CountingEncoder())
    assert pair.superres_ids == build_prompts(SongRequest(tags="x", lyrics="a" * 1030), CountingEncoder()).superres_ids
    assert len(pair.superres_ids) == 1040 and pair.superres_dropped_lines == 2
    assert "dropped the last 2 of 3 lyric lines" in pair.truncated[0]


def test_one_huge_line_is_dropped_whole_leaving_the_empty_lyrics_prompt() -> None:
    pair = build_prompts(SongRequest(tags="x", lyrics="y" * 5000), CountingEncoder())
    want = [BOS, ord("x"), EOM, EOM, BOL, EOL] + TAIL2
    assert pair.backbone_ids == pair.superres_ids == want
    assert pair.backbone_dropped_lines == pair.superres_dropped_lines == 1


def test_line_counts_in_the_cut_note_have_thousands_separators() -> None:
    # "dropped the last 39417 of 40000 lyric lines" beside "319,009 tokens"
    pair = build_prompts(SongRequest(tags="x", lyrics="\n".join(["ab"] * 3000), minutes=2), CountingEncoder())
    assert re.search(r"dropped the last \d,\d{3} of 3,000 lyric lines", pair.truncated[0]), pair.truncated[0]


def test_long_lyrics_cut_both_prompts_with_real_tokenizer(tok: Tokenizer, bpe) -> None:
    # Each "line i of a very long song" (i < 1000) is 8 BPE tokens: line, " ", i, of, a, very, long, song.
    # 5 (BOS Pop EOM EOM BOL) + 700 x (EOL + 8) + 4 = 6309. Backbone keeps 454 lines (4095 <= 4096),
    # super-res 226 (2043 <= 2048).
    lines = [f"line {i} of a very long song" for i in range(700)]
    assert {len(bpe(line)) for line in lines} == {8}
    req = SongRequest(tags="Pop", lyrics="\n".join(lines), minutes=2)
    backbone_text, superres_text = build_prompt_texts(req)
    pair = build_prompts(req, tok)
    assert (len(pair.backbone_ids), pair.backbone_dropped_lines) == (4095, 246)
    assert (len(pair.superres_ids), pair.superres_dropped_lines) == (2043, 474)
    assert pair.backbone_ids == build_prompts(dataclasses.replace(req, lyrics="\n".join(lines[:454])), tok).backbone_ids
    assert pair.superres_ids == build_prompts(dataclasses.replace(req, lyrics="\n".join(lines[:226])), tok).superres_ids
    assert pair.backbone_ids[-5:] == bpe(" song")[-1:] + TAIL2 and pair.superres_ids[-4:] == TAIL2
    assert pair.backbone_text == backbone_text and pair.superres_text == superres_text
    assert pair.truncated == [
        "backbone prompt is 6,309 tokens, over its cap of 4,096: dropped the last 246 of 700 lyric lines "
        "(the duration and the end of the prompt are kept).",
        "super-res prompt is 6,309 tokens, over its cap of 2,048: dropped the last 474 of 700 lyric lines "
        "(the duration and the end of the prompt are kept)."]


def test_huge_tags_are_cut_when_even_no_lyrics_is_over_the_cap() -> None:
    # Instrumental: BOS + 5000 t + EOM + "Instrumental" (12) + 4 = 5018 ids; the tags keep
    # 4096 - (1 + 1 + 12 + 4) = 4078 ids in the backbone, 2048 - 18 = 2030 in super-res.
    req = SongRequest(tags="t" * 5000, instrumental=True, minutes=2)
    pair = build_prompts(req, CountingEncoder())
    rest = [EOM] + [ord(c) for c in "Instrumental"] + TAIL2
    assert pair.backbone_ids == [BOS] + [ord("t")] * 4078 + rest
    assert pair.superres_ids == [BOS] + [ord("t")] * 2030 + rest
    assert pair.truncated[0] == ("backbone prompt is 5,018 tokens, over its cap of 4,096 even without lyrics: cut "
                                 "the tags to its first 4,078 of 5,000 tokens (the duration and the end of the "
                                 "prompt are kept).")
    assert pair.dropped_lines == 0


def test_huge_description_drops_every_lyric_line_then_cuts_the_description() -> None:
    # Backbone: BOS + 5000 d + EOM EOM BOL + EOL + 4: lyrics all dropped, description keeps
    # 4096 - 9 = 4087. Super-res uses the genre "g": 5 + 2 x (1 + 3) + 4 = 17 ids, whole.
    req = SongRequest(description="d" * 5000, genre="g", lyrics="one\ntwo", minutes=2)
    pair = build_prompts(req, CountingEncoder())
    assert pair.backbone_ids == [BOS] + [ord("d")] * 4087 + [EOM, EOM, BOL, EOL] + TAIL2
    assert "dropped all 2 lyric lines and cut the description to its first 4,087 of 5,000" in pair.truncated[0]
    assert pair.backbone_dropped_lines == 2 and pair.superres_dropped_lines == 0 and len(pair.superres_ids) == 17


def test_count_tokens_reports_uncapped_lengths(tok: Tokenizer) -> None:
    assert count_tokens(DESCRIBED, tok) == {"backbone": 1 + 7 + 4 + 2 + 4, "superres": 1 + 2 + 4 + 2 + 4,
                                            "backbone_cap": 4096, "superres_cap": 2048, "dropped_lines": 0}
    long = _request_of_length(BACKBONE_CAP + 10)
    counts = count_tokens(long, CountingEncoder())
    assert counts["backbone"] == counts["superres"] == BACKBONE_CAP + 10
    assert counts["dropped_lines"] == 1


def test_count_tokens_allows_an_empty_prompt_while_typing(tok: Tokenizer) -> None:
    counts = count_tokens(SongRequest(lyrics="", minutes=2), tok)
    assert counts["backbone"] == counts["superres"] == 9  # BOS EOM EOM BOL EOL EOM DUR EOT BOA


def test_pair_is_frozen(tok: Tokenizer) -> None:
    pair = build_prompts(SUNG, tok)
    assert isinstance(pair, PromptPair)
    with pytest.raises(AttributeError):
        pair.truncated = ["x"]  # type: ignore[misc]


# -- errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("req", [
    SongRequest(lyrics="la"), SongRequest(tags="  ", description="\n", genre="\t", lyrics="la"),
    SongRequest(instrumental=True),
])
def test_empty_prompt_is_refused(req: SongRequest, tok: Tokenizer) -> None:
    with pytest.raises(PromptError, match="Say what the song is"):
        build_prompt_texts(req)
    with pytest.raises(PromptError, match="Say what the song is"):
        build_prompts(req, tok)


@pytest.mark.parametrize("minutes", [-1, 11, 2.5, True, "2"])
def test_bad_duration_is_refused(minutes: object, tok: Tokenizer) -> None:
    req = SongRequest(tags="Pop", lyrics="la", minutes=minutes)  # type: ignore[arg-type]
    for call in (lambda: build_prompt_texts(req), lambda: build_prompts(req, tok), lambda: count_tokens(req, tok)):
        with pytest.raises(RequestError, match="Duration"):
            call()


# -- lyrics files -----------------------------------------------------------------------

def test_read_lyrics_file_utf8_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "song.txt"
    path.write_bytes("\ufeff第一行\r\nline two ♪\n".encode("utf-8"))
    assert read_lyrics_file(path) == "第一行\r\nline two ♪\n"


@pytest.mark.parametrize("case, content, words", [
    ("missing", None, "not found"),
    ("directory", "dir", "not a file"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not UTF-8"),
    ("binary-utf8", b"ab\x00\x01\x02cd\x00\x00", "binary"),
    ("latin-1", "café déjà vu".encode("latin-1"), "not UTF-8"),
])
def test_read_lyrics_file_errors(tmp_path: Path, case: str, content: object, words: str) -> None:
    path = tmp_path / f"{case}.txt"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(PromptError) as err:
        read_lyrics_file(path)
    assert words in str(err.value) and path.name in str(err.value)
