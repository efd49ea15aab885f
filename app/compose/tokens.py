"""Live prompt token count for the lyrics editor (engine.prompt.template + the weights' tokenizer)."""

from __future__ import annotations

from pathlib import Path

from engine.prompt.template import BACKBONE_CAP, SUPERRES_CAP, count_tokens
from engine.request import SongRequest


class TokenCounter:
    """Exact when the tokenizer in the weights folder can be read, else a clearly-marked estimate."""

    def __init__(self, weights_dir: Path | None = None) -> None:
        self._tokenizer = None
        self._tried: Path | None = None
        self.set_weights_dir(weights_dir)

    def set_weights_dir(self, weights_dir: Path | None) -> None:
        self._weights_dir = weights_dir
        self._tokenizer = None
        self._tried = None

    @property
    def exact(self) -> bool:
        return self._load() is not None

    def _load(self):
        if self._tokenizer is None and self._weights_dir is not None and self._tried != self._weights_dir:
            self._tried = self._weights_dir
            path = Path(self._weights_dir) / "tokenizer.json"
            if path.is_file():
                try:
                    from engine.prompt.tokenizer import Tokenizer

                    self._tokenizer = Tokenizer.from_file(path)
                except Exception:  # noqa: BLE001 - a bad tokenizer file: fall back to the estimate
                    self._tokenizer = None
        return self._tokenizer

    def count(self, request: SongRequest) -> dict[str, int]:
        tok = self._load()
        if tok is not None:
            try:
                return count_tokens(request, tok)
            except Exception:  # noqa: BLE001 - e.g. a duration the prompt cannot express yet
                pass
        text = "\n".join((request.description or request.tags or request.genre, request.lyrics))
        # about 3.5 UTF-8 bytes per BPE token for English lyrics, plus the template's specials
        estimate = 12 + int(len(text.encode("utf-8")) / 3.5) + text.count("\n")
        return {"backbone": estimate, "superres": estimate, "backbone_cap": BACKBONE_CAP,
                "superres_cap": SUPERRES_CAP}
