"""Typed settings with defaults, stored in an INI file in the app data folder.

Every value is read back with its type checked: a stored value of the wrong type or out of range
(edited by hand, written by another version, damaged) is removed from the file, the default is used
and a note is kept in ``Settings.notes`` (the window shows them once at launch). A bad setting never
stops the window from opening."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from app import paths
from engine.errors import RequestError
from engine.remote.client import normalise_server_url
from engine.request import UPSTREAM_TOKEN_CAP, SongRequest

AUDIO_FORMATS = ("wav", "flac", "mp3")
MAX_REQUEST_CHARS = 1 << 20  # a saved request larger than this is not read (lyrics are far shorter)
_REQUEST_TYPES: dict[str, tuple[type, ...]] = {  # the JSON types each SongRequest field may hold
    "tags": (str,), "description": (str,), "genre": (str,), "lyrics": (str,), "instrumental": (bool,),
    "minutes": (int,), "temperature": (int, float), "top_k": (int,), "top_k_superres": (int,),
    "seed": (int, type(None)), "variations": (int,), "max_tokens": (int, type(None)),
}
# a request that passes validate() whatever the field under test: used to range-check one field
_VALID_BASE = SongRequest(tags="x", instrumental=True)


class _Unreadable:
    def __repr__(self) -> str:
        return "unreadable"


_UNREADABLE = _Unreadable()


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def request_from_saved(data: Any) -> tuple[SongRequest | None, list[str]]:
    """A SongRequest from saved JSON data: each field of the wrong type or out of range (per
    SongRequest.validate) is left at its default; returns the request (None when ``data`` is not an
    object) and the names of the fields that were reset."""
    if not isinstance(data, dict):
        return None, []
    fields: dict[str, Any] = {}
    reset: list[str] = []
    for name, types in _REQUEST_TYPES.items():
        if name not in data:
            continue
        value = data[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if ok and name not in ("tags", "description", "genre", "lyrics", "instrumental"):
            try:
                dataclasses.replace(_VALID_BASE, **{name: value}).validate()
            except RequestError:
                ok = False
        if ok:
            fields[name] = value
        else:
            reset.append(name)
    return SongRequest(**fields), reset


class Settings:
    """Every value has a default; a missing or malformed stored value falls back to it, with a note."""

    def __init__(self, store: QSettings | None = None) -> None:
        self._s = store or QSettings(str(paths.settings_path()), QSettings.Format.IniFormat)
        self._notes: dict[str, str] = {}
        if self._s.status() != QSettings.Status.NoError:
            self._notes["*"] = (f"The settings file {self._s.fileName()} could not be read "
                                f"({self._s.status().name}); defaults are used.")

    # -- reading and writing -------------------------------------------------------------------
    @property
    def notes(self) -> list[str]:
        """What was reset, one line per setting, in the order found."""
        return list(self._notes.values())

    def check(self) -> list[str]:
        """Read every setting once (resetting bad ones); the notes."""
        for name, attribute in vars(Settings).items():
            if isinstance(attribute, property) and name != "notes":
                getattr(self, name)
        return self.notes

    def _get(self, key: str, default: Any) -> Any:
        """The stored value, ``default`` when absent, or an object no property accepts when the
        stored value cannot be read at all (``@Variant(garbage)`` reads as None)."""
        try:
            value = self._s.value(key, default)
        except Exception:  # noqa: BLE001 - a value Qt cannot even construct is just a bad value
            return _UNREADABLE
        if value is None:
            return _UNREADABLE if self._s.contains(key) else default
        return value

    def _reset(self, key: str, shown: Any, why: str, default_text: str) -> None:
        """Forget the stored value (so the note is shown once) and say so."""
        self._s.remove(key)
        self._s.sync()
        self._notes[key] = f"The saved setting “{key}” ({_short(shown)}) {why}; {default_text} is used instead."

    def _set(self, key: str, value: Any) -> None:
        self._s.setValue(key, value)
        self._s.sync()
        self._notes.pop(key, None)

    def _text(self, key: str, default: str) -> str | None:
        """The stored value when it is text (or absent), else None after resetting it."""
        value = self._get(key, default)
        if isinstance(value, str):
            return value
        self._reset(key, value, "is not text", "the default")
        return None

    # -- the settings --------------------------------------------------------------------------
    @property
    def songs_dir(self) -> Path:
        """Always a full path: an empty, relative or malformed value falls back to ~/Music/Khala."""
        default = paths.default_songs_dir()
        value = self._text("songs_dir", str(default))
        if value is None:
            return default
        folder = Path(value.strip()).expanduser() if value.strip() else None
        if folder is None or not folder.is_absolute():
            self._reset("songs_dir", value, "is not a full folder path", f"the folder {default}")
            return default
        return folder

    @songs_dir.setter
    def songs_dir(self, value: Path) -> None:
        folder = Path(value).expanduser()
        if not folder.is_absolute():
            raise ValueError(f"The songs folder must be a full path; got {str(value)!r}.")
        self._set("songs_dir", str(folder))

    @property
    def weights_dir(self) -> Path | None:
        """The model folder chosen by the user; None when unset (or not a full path)."""
        value = self._text("weights_dir", "")
        if not value or not value.strip():
            return None
        folder = Path(value.strip()).expanduser()
        if not folder.is_absolute():
            self._reset("weights_dir", value, "is not a full folder path", "no model folder")
            return None
        return folder

    @weights_dir.setter
    def weights_dir(self, value: Path | None) -> None:
        self._set("weights_dir", str(Path(value).expanduser().absolute()) if value else "")

    @property
    def audio_format(self) -> str:
        value = self._text("audio_format", "wav")
        if value is None:
            return "wav"
        if value.lower() not in AUDIO_FORMATS:
            self._reset("audio_format", value, f"is not one of {', '.join(AUDIO_FORMATS)}", "wav")
            return "wav"
        return value.lower()

    @audio_format.setter
    def audio_format(self, value: str) -> None:
        if value not in AUDIO_FORMATS:
            raise ValueError(f"The audio format must be one of {', '.join(AUDIO_FORMATS)}; got {value!r}.")
        self._set("audio_format", value)

    @property
    def keep_model_loaded(self) -> bool:
        value = self._get("keep_model_loaded", "false")
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self._reset("keep_model_loaded", value, "is not true or false", "false")
        return False

    @keep_model_loaded.setter
    def keep_model_loaded(self, value: bool) -> None:
        self._set("keep_model_loaded", "true" if value else "false")

    @property
    def last_request(self) -> SongRequest | None:
        """The last request made, to fill the compose panel; fields that are wrong are left at default."""
        raw = self._text("last_request", "")
        if not raw:
            return None
        if len(raw) > MAX_REQUEST_CHARS:
            self._reset("last_request", raw[:20], f"is larger than {MAX_REQUEST_CHARS} characters", "an empty song")
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
        request, reset = request_from_saved(data)
        if request is None:
            self._reset("last_request", raw, "is not a saved song request", "an empty song")
        elif reset:
            self._s.setValue("last_request", json.dumps(request.to_dict()))
            self._s.sync()
            self._notes["last_request"] = (f"The saved song request had unusable values for {', '.join(reset)}; "
                                           "the defaults are used for those.")
        return request

    @last_request.setter
    def last_request(self, request: SongRequest) -> None:
        self._set("last_request", json.dumps(request.to_dict()))

    @property
    def geometry(self) -> bytes:
        """The window's saved geometry (Qt's own bytes); empty when unset or not bytes."""
        value = self._get("geometry", b"")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, QByteArray):
            return bytes(value.data())
        if value == "":
            return b""
        self._reset("geometry", value, "is not a saved window geometry", "the default window size")
        return b""

    @geometry.setter
    def geometry(self, value: bytes) -> None:
        self._set("geometry", QByteArray(bytes(value)))

    @property
    def max_tokens(self) -> int | None:
        """A cap on backbone tokens (developers, tests, screenshots); unset (0) for normal use."""
        value = self._get("max_tokens", 0)
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value.strip()) <= 18:
            number = int(value.strip())
        if number is None or (number != 0 and not 2 <= number <= UPSTREAM_TOKEN_CAP):
            self._reset("max_tokens", value, f"is not 0 (no cap) or a whole number from 2 to {UPSTREAM_TOKEN_CAP:,}",
                        "no cap")
            return None
        return number or None

    @max_tokens.setter
    def max_tokens(self, value: int | None) -> None:
        self._set("max_tokens", int(value or 0))

    @property
    def server_url(self) -> str:
        """The Khala server songs are made on (Settings → Engine); "" means this Mac."""
        value = self._text("server_url", "")
        if not value or not value.strip():
            return ""
        try:
            return normalise_server_url(value)
        except RequestError:
            self._reset("server_url", value, "is not a Khala server address", "this Mac")
            return ""

    @server_url.setter
    def server_url(self, value: str) -> None:
        self._set("server_url", normalise_server_url(value) if value else "")
