"""The tag catalogue (resources/tags.json): categories with bilingual labels and tags."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

MAX_PER_CATEGORY = 10


@dataclass(frozen=True)
class Category:
    key: str
    label: str
    tags: tuple[str, ...]


def english_label(label: str) -> str:
    """'流派/风格 (Genre/Style)' → 'Genre/Style'."""
    match = re.search(r"\(([^()]*[A-Za-z][^()]*)\)\s*$", label)
    return match.group(1).strip() if match else label.strip()


def catalogue_path() -> Path:
    from app.resources import resource_path

    return resource_path("tags.json")


def load_catalogue(path: Path | None = None) -> list[Category]:
    """The categories in file order; an unreadable file gives an empty catalogue."""
    try:
        data = json.loads(Path(path or catalogue_path()).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    cats = []
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(value.get("tags"), list):
            by_lower = {str(t).lower(): str(t) for t in reversed(value["tags"])}  # first spelling wins
            tags = tuple(dict.fromkeys(by_lower[str(t).lower()] for t in value["tags"]))
            cats.append(Category(key, english_label(str(value.get("label", key))), tags))
    return cats
