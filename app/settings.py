"""Typed settings with defaults, stored in an INI file in the app data folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings

from app import paths
from engine.request import SongRequest


class Settings:
    """Every value has a default; a missing or malformed stored value falls back to it."""

    def __init__(self, store: QSettings | None = None) -> None:
        self._s = store or QSettings(str(paths.settings_path()), QSettings.Format.IniFormat)

    def _get(self, key: str, default: Any) -> Any:
        value = self._s.value(key, default)
        return default if value is None else value

    def _set(self, key: str, value: Any) -> None:
        self._s.setValue(key, value)
        self._s.sync()

    @property
    def songs_dir(self) -> Path:
        return Path(str(self._get("songs_dir", str(paths.default_songs_dir()))))

    @songs_dir.setter
    def songs_dir(self, value: Path) -> None:
        self._set("songs_dir", str(value))

    @property
    def weights_dir(self) -> Path | None:
        value = str(self._get("weights_dir", ""))
        return Path(value) if value else None

    @weights_dir.setter
    def weights_dir(self, value: Path | None) -> None:
        self._set("weights_dir", str(value) if value else "")

    @property
    def audio_format(self) -> str:
        value = str(self._get("audio_format", "wav")).lower()
        return value if value in ("wav", "flac", "mp3") else "wav"

    @audio_format.setter
    def audio_format(self, value: str) -> None:
        self._set("audio_format", value)

    @property
    def keep_model_loaded(self) -> bool:
        return str(self._get("keep_model_loaded", "false")).lower() == "true"

    @keep_model_loaded.setter
    def keep_model_loaded(self, value: bool) -> None:
        self._set("keep_model_loaded", "true" if value else "false")

    @property
    def last_request(self) -> SongRequest | None:
        raw = str(self._get("last_request", ""))
        if not raw:
            return None
        try:
            return SongRequest.from_dict(json.loads(raw))
        except (ValueError, TypeError):
            return None

    @last_request.setter
    def last_request(self, request: SongRequest) -> None:
        self._set("last_request", json.dumps(request.to_dict()))

    @property
    def geometry(self) -> bytes:
        value = self._get("geometry", b"")
        return bytes(value) if value else b""

    @geometry.setter
    def geometry(self, value: bytes) -> None:
        self._set("geometry", value)

    @property
    def max_tokens(self) -> int | None:
        """A cap on backbone tokens (developers, tests, screenshots); unset for normal use."""
        try:
            value = int(self._get("max_tokens", 0))
        except (TypeError, ValueError):
            return None
        return value if value > 0 else None

    @max_tokens.setter
    def max_tokens(self, value: int | None) -> None:
        self._set("max_tokens", int(value or 0))

    @property
    def server_url(self) -> str:
        """The Khala server songs are made on ("" = this Mac)."""
        from engine.errors import RequestError
        from engine.remote.client import normalise_server_url

        value = str(self._get("server_url", "") or "").strip()
        try:
            return normalise_server_url(value) if value else ""
        except RequestError:
            return ""

    @server_url.setter
    def server_url(self, value: str) -> None:
        self._set("server_url", value)
