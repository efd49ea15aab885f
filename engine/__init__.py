"""Khala engine: the song pipeline in plain PyTorch. Never imports Qt."""

__version__ = "0.1.0"
