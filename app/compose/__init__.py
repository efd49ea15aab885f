"""The compose panel: what the song is (tags or description, genre), lyrics, length, advanced."""

from app.compose.panel import ComposePanel

__all__ = ["ComposePanel"]
