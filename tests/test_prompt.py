"""Prompt templates, ids, caps and errors (SPEC §5).

Expected ids are hand-assembled: special ids written out as numbers, text pieces as
ids of the plain Llama-3 BPE (the tokenizers library on the bare text piece).
"""

from __future__ import annotations

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


# -- caps -------------------------------------------------------------------------------

class CountingEncoder:
    """One id per character: makes prompt lengths exact for boundary tests."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def _request_of_length(n: int) -> SongRequest:
    probe = build_prompt_texts(SongRequest(tags="x", lyrics="y", minutes=2))[0]
    return SongRequest(tags="x", lyrics="y" * (n - len(probe) + 1), minutes=2)


@pytest.mark.parametrize("n", [SUPERRES_CAP - 1, SUPERRES_CAP])
def test_at_cap_nothing_is_cut(n: int) -> None:
    pair = build_prompts(_request_of_length(n), CountingEncoder())
    assert len(pair.backbone_ids) == len(pair.superres_ids) == n and pair.truncated == []


def test_superres_only_cut_keeps_first_cap_minus_one_and_last() -> None:
    req = _request_of_length(SUPERRES_CAP + 1)
    full = CountingEncoder().encode(build_prompt_texts(req)[1])
    pair = build_prompts(req, CountingEncoder())
    assert len(pair.backbone_ids) == SUPERRES_CAP + 1
    assert pair.superres_ids == full[: SUPERRES_CAP - 1] + [full[-1]]
    assert len(pair.superres_ids) == SUPERRES_CAP
    assert len(pair.truncated) == 1 and "super-res" in pair.truncated[0] and "2049" in pair.truncated[0]


def test_long_lyrics_cut_both_prompts_with_real_tokenizer(tok: Tokenizer) -> None:
    req = SongRequest(tags="Pop", lyrics="\n".join(f"line {i} of a very long song" for i in range(700)), minutes=2)
    backbone_text, superres_text = build_prompt_texts(req)
    full = tok.encode(backbone_text)
    assert len(full) > BACKBONE_CAP
    pair = build_prompts(req, tok)
    assert pair.backbone_ids == full[: BACKBONE_CAP - 1] + [BOA]
    assert pair.superres_ids == full[: SUPERRES_CAP - 1] + [BOA]
    assert pair.backbone_text == backbone_text and pair.superres_text == superres_text
    dropped = str(len(full) - BACKBONE_CAP)
    assert len(pair.truncated) == 2
    assert pair.truncated[0].startswith("backbone") and dropped in pair.truncated[0] and str(len(full)) in pair.truncated[0]
    assert pair.truncated[1].startswith("super-res") and str(len(full) - SUPERRES_CAP) in pair.truncated[1]


def test_count_tokens_reports_uncapped_lengths(tok: Tokenizer) -> None:
    assert count_tokens(DESCRIBED, tok) == {"backbone": 1 + 7 + 4 + 2 + 4, "superres": 1 + 2 + 4 + 2 + 4, "backbone_cap": 4096, "superres_cap": 2048}
    long = _request_of_length(BACKBONE_CAP + 10)
    counts = count_tokens(long, CountingEncoder())
    assert counts["backbone"] == counts["superres"] == BACKBONE_CAP + 10


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
