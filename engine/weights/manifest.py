"""The model manifest (resources/model_manifest.json): which Hub repository and revision, the six
weight files and their approximate sizes, and where a tokenizer.json can be found."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.errors import WeightsError

WEIGHT_FILES = (
    "khala_backbone.safetensors",
    "backbone_megatron_args.json",
    "khala_superres.safetensors",
    "superres_megatron_args.json",
    "decoder_weights.pt",
    "decoder_config.yaml",
)
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_PATH = Path(os.environ.get("KHALA_MANIFEST")
                     or Path(__file__).resolve().parents[2] / "resources" / "model_manifest.json")


@dataclass(frozen=True)
class TokenizerSource:
    type: str  # "bundled_file" (next to the manifest), "python_package" or "hub"
    distribution: str = ""
    module: str = ""
    path: str = ""
    repo: str = ""
    revision: str = "main"
    file: str = TOKENIZER_FILE


@dataclass(frozen=True)
class Manifest:
    repo: str
    revision: str
    approx_bytes: dict[str, int | None]
    tokenizer_sources: tuple[TokenizerSource, ...]

    @property
    def approx_total_bytes(self) -> int:
        """The whole download (six files and tokenizer.json): the sum of the per-file estimates,
        the one source of every download size Khala states (see ``download_size_text``)."""
        return sum(v for v in self.approx_bytes.values() if v)

    @property
    def approx_total_gb(self) -> float:
        return self.approx_total_bytes / 1e9


def download_size_text(n_bytes: int) -> str:
    """How Khala states a download size everywhere (CLI, first-launch dialog, README):
    "about 8.1 GB", "about 9.1 MB" (decimal units, one decimal)."""
    if n_bytes >= 1e9:
        return f"about {n_bytes / 1e9:.1f} GB"
    return f"about {n_bytes / 1e6:.1f} MB"


@lru_cache(maxsize=4)
def load_manifest(path: Path | str | None = None) -> Manifest:
    path = Path(path or MANIFEST_PATH)
    try:
        raw = json.loads(path.read_text())
        sizes = {f["name"]: f.get("size") or f.get("approx_bytes") for f in raw["files"]}
        sizes[TOKENIZER_FILE] = raw["tokenizer"].get("approx_bytes")
        known = set(TokenizerSource.__dataclass_fields__)
        sources = tuple(TokenizerSource(**{k: v for k, v in s.items() if k in known})
                        for s in raw["tokenizer"]["sources"])
        return Manifest(repo=raw["repo"], revision=raw.get("revision") or "main",
                        approx_bytes=sizes, tokenizer_sources=sources)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"Cannot read the model manifest {path}: {error}") from None
