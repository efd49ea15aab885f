"""Where the app's read-only files (icons, tag catalogue, model manifest) live.

From source they are in the repository's ``resources/`` folder. Inside Khala.app,
py2app copies that folder's contents into ``Contents/Resources`` and sets
``RESOURCEPATH`` to it, so the same relative names work in both places.
"""

from __future__ import annotations

import os
from pathlib import Path

SOURCE_RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    """The path of a bundled resource, e.g. ``resource_path("tags.json")``; not checked to exist."""
    bundle = os.environ.get("RESOURCEPATH")
    return (Path(bundle) if bundle else SOURCE_RESOURCES).joinpath(*parts)
