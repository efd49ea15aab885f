"""Khala desktop app (PySide6). Never imports torch: the engine is reached through
its plain types, and ``engine.pipeline`` only inside a worker when a song is made."""

from app.qt_none_guard import keep_none_alive

keep_none_alive()  # before any Qt call: PySide6 6.12 drops a reference to None per void call on Python < 3.12
