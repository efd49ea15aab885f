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
        """``engine.prompt.template.count_tokens``: exact with the weights' tokenizer, else the same
        template over an estimating encoder (so ``dropped_lines`` is estimated the same way)."""
        tok = self._load()
        try:
            return count_tokens(request, tok if tok is not None else EstimateEncoder())
        except Exception:  # noqa: BLE001 - e.g. a duration the prompt cannot express yet
            pass
        return {"backbone": 0, "superres": 0, "backbone_cap": BACKBONE_CAP, "superres_cap": SUPERRES_CAP,
                "dropped_lines": 0}


class EstimateEncoder:
    """About 3.5 UTF-8 bytes per BPE token for English lyrics (at least one per non-empty text).
    Stands in for Tokenizer.encode_text; its ids are placeholders (0), only their count matters."""

    def encode_text(self, text: str) -> list[int]:
        return [0] * max(1, round(len(text.encode("utf-8")) / 3.5)) if text else []
