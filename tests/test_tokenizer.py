"""The pinned Llama 3.1 special-token table and the BPE-only tokenizer (SPEC §4)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RawTokenizer

from engine.prompt import special_tokens as st
from engine.errors import PromptError
from engine.prompt.tokenizer import Tokenizer, validate_tokenizer_json
from tokenizer_files import llama31_tokenizer_json, llama32_tokenizer_json

REPO = Path(__file__).resolve().parents[1]
REFERENCE_NAMES = ("shared/reference/special_tokens_llama31.json",)
# sha256 of "id:name\n" lines, ids ascending, of reference/special_tokens_llama31.json.
REFERENCE_SHA256 = "fe9515fe69c5aee3163090284c56b9a2b5751c0e8024e1ea47703ffd686dd982"


def _canonical_sha256(table: dict[int, str]) -> str:
    text = "".join(f"{i}:{table[i]}\n" for i in sorted(table))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _reference_file() -> Path | None:
    for base in (REPO, REPO.parent):
        for name in REFERENCE_NAMES:
            if (base / name).is_file():
                return base / name
    return None


# -- the special-token table ------------------------------------------------------------

def test_special_table_equals_reference_json() -> None:
    ref = _reference_file()
    if ref is None:
        pytest.skip("reference/special_tokens_llama31.json not present (the hash test still checks it)")
    want = {int(k): v for k, v in json.loads(ref.read_text(encoding="utf-8")).items()}
    assert {v: k for k, v in want.items()} == st.SPECIAL_TOKENS


def test_special_table_matches_reference_hash() -> None:
    assert _canonical_sha256(st.ID_TO_SPECIAL) == REFERENCE_SHA256


def test_special_table_shape() -> None:
    assert len(st.SPECIAL_TOKENS) == 256
    assert sorted(st.SPECIAL_TOKENS.values()) == list(range(128000, 128256))
    assert "<|image|>" not in st.SPECIAL_TOKENS and "<|step_id|>" not in st.SPECIAL_TOKENS


def test_named_constants() -> None:
    names = {st.BOS: "<|begin_of_text|>", st.EOS: "<|end_of_text|>", st.PAD_LOOKUP: "<|finetune_right_pad_id|>",
             st.BOL: "<|start_header_id|>", st.EOL: "<|end_header_id|>", st.EOM: "<|eom_id|>",
             st.EOT: "<|eot_id|>", st.BOA: "<|python_tag|>"}
    assert (st.BOS, st.EOS, st.PAD_LOOKUP, st.BOL, st.EOL, st.EOM, st.EOT, st.BOA) == (
        128000, 128001, 128004, 128006, 128007, 128008, 128009, 128010)
    for i, name in names.items():
        assert st.SPECIAL_TOKENS[name] == i
    assert (st.AUDIO_BASE, st.CODEBOOK_SIZE) == (128256, 1024)


@pytest.mark.parametrize("n", range(248))
def test_duration_id_rule(n: int) -> None:
    want = {0: 128002, 1: 128003, 2: 128005}.get(n, 128008 + n)
    assert st.duration_token(n) == f"<|reserved_special_token_{n}|>"
    assert st.duration_id(n) == want


@pytest.mark.parametrize("bad", [-1, 248, 2.0, True, "2"])
def test_duration_token_rejects_non_tokens(bad: object) -> None:
    with pytest.raises(ValueError):
        st.duration_token(bad)  # type: ignore[arg-type]


# -- loading and validation -------------------------------------------------------------

@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_file(llama32_tokenizer_json())


def test_known_ids(tok: Tokenizer) -> None:
    assert tok.encode("Hello world") == [9906, 1917]
    assert tok.encode("") == []


def test_load_is_cached_per_path(tok: Tokenizer) -> None:
    start = time.perf_counter()
    again = Tokenizer.from_file(str(llama32_tokenizer_json()))
    assert again is tok
    assert time.perf_counter() - start < 0.05


def test_validate_accepts_real_files(tmp_path: Path) -> None:
    validate_tokenizer_json(llama32_tokenizer_json())
    validate_tokenizer_json(llama31_tokenizer_json(tmp_path))


def _real_json() -> dict:
    return json.loads(llama32_tokenizer_json().read_text(encoding="utf-8"))


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files: dict[str, tuple[Path, str]] = {}
    (tmp_path / "folder.json").mkdir()
    files["missing"] = (tmp_path / "nope.json", "not found")
    files["directory"] = (tmp_path / "folder.json", "not found")
    (tmp_path / "garbage.json").write_bytes(b"\x00\xff{not json")
    files["not json"] = (tmp_path / "garbage.json", "JSON")
    (tmp_path / "list.json").write_text("[1, 2]")
    files["not an object"] = (tmp_path / "list.json", "not a tokenizer.json")
    (tmp_path / "wordpiece.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    files["not BPE"] = (tmp_path / "wordpiece.json", "not a BPE")
    small = _real_json()
    small["model"]["vocab"] = dict(list(small["model"]["vocab"].items())[:1000])
    (tmp_path / "small.json").write_text(json.dumps(small))
    files["small vocab"] = (tmp_path / "small.json", "128000")
    swapped = _real_json()
    vocab = swapped["model"]["vocab"]
    vocab["Hello"], vocab["Ġworld"] = vocab["Ġworld"], vocab["Hello"]
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    files["wrong ids"] = (tmp_path / "swapped.json", "9906")
    return files


def test_bad_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    for case, (path, words) in _bad_files(tmp_path).items():
        for load in (validate_tokenizer_json, Tokenizer.from_file):
            with pytest.raises(PromptError) as err:
                load(path)
            assert path.name in str(err.value), case
            assert words in str(err.value), case


# -- encoding: specials pinned, the file used for BPE only ------------------------------

def test_every_31_special_string_gets_its_pinned_id(tok: Tokenizer) -> None:
    names = sorted(st.SPECIAL_TOKENS, key=st.SPECIAL_TOKENS.get)
    assert tok.encode("".join(names)) == list(range(128000, 128256))


def test_32_only_names_are_plain_text(tok: Tokenizer) -> None:
    raw = RawTokenizer.from_file(str(llama32_tokenizer_json()))
    assert raw.encode("<|image|>", add_special_tokens=False).ids == [128256]  # what the trap looks like
    for text in ("<|image|>", "<|step_id|>", "x<|image|>y"):
        ids = tok.encode(text)
        assert all(i < 128000 for i in ids), text
        assert tok.decode(ids) == text


def test_the_32_duration_trap(tmp_path: Path, tok: Tokenizer) -> None:
    text = "<|reserved_special_token_2|>"
    raw32 = RawTokenizer.from_file(str(llama32_tokenizer_json()))
    trap = raw32.encode(text, add_special_tokens=False).ids
    assert trap == [128011]  # the 3.2 file's own id for this name: silently wrong
    assert tok.encode(text) == [128005]
    assert Tokenizer.from_file(llama31_tokenizer_json(tmp_path)).encode(text) == [128005]


MIXED = ("<|begin_of_text|>Pop, Piano<|eom_id|><|eom_id|><|start_header_id|><|end_header_id|>"
         "Hello  world<|end_header_id|>你好，世界 <|image|>!<|eom_id|><|reserved_special_token_7|>"
         "<|eot_id|><|python_tag|>")


def test_32_and_31_files_give_identical_ids(tmp_path: Path, tok: Tokenizer) -> None:
    tok31 = Tokenizer.from_file(llama31_tokenizer_json(tmp_path))
    assert tok31 is not tok
    assert tok31.encode(MIXED) == tok.encode(MIXED)


def test_matches_upstream_encode_with_the_31_file(tmp_path: Path, tok: Tokenizer) -> None:
    # Upstream: AutoTokenizer(3.1 file).encode(prompt, add_special_tokens=False); the tokenizers
    # library with the 3.1-named file does the same split-on-added-tokens encoding.
    raw31 = RawTokenizer.from_file(str(llama31_tokenizer_json(tmp_path)))
    assert tok.encode(MIXED) == raw31.encode(MIXED, add_special_tokens=False).ids


def test_segments_are_bpe_encoded_separately(tok: Tokenizer) -> None:
    # "Hello" after a special token is not merged with what precedes it.
    assert tok.encode("Pop<|eom_id|>Hello world") == [11859, 128008, 9906, 1917]


def test_decode(tok: Tokenizer) -> None:
    ids = tok.encode(MIXED)
    assert tok.decode(ids) == MIXED
    assert tok.decode([128256, 128256 + 1024 + 7]) == "<audio q0:0><audio q1:7>"


def test_engine_prompt_modules_do_not_import_torch() -> None:
    code = ("import sys, engine.prompt.template, engine.prompt.tokenizer, engine.prompt.lyrics, engine.prompt.special_tokens; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
