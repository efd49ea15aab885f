"""Khala desktop app (PySide6). Never imports torch: the engine is reached through
its plain types, and ``engine.pipeline`` only inside a worker when a song is made."""
