"""Where the app keeps its files: data folder, cache, default songs folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "Khala"


def app_data_dir() -> Path:
    """macOS: ~/Library/Application Support/Khala; Linux: $XDG_DATA_HOME/Khala.

    ``KHALA_APP_DATA`` overrides it (tests, portable installs)."""
    override = os.environ.get("KHALA_APP_DATA")
    if override:
        base = Path(override)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / APP_NAME
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home())) / APP_NAME
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        base = Path(xdg) / APP_NAME
    base.mkdir(parents=True, exist_ok=True)
    return base


def cache_dir() -> Path:
    path = app_data_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def library_db_path() -> Path:
    return app_data_dir() / "library.sqlite3"


def settings_path() -> Path:
    return app_data_dir() / "settings.ini"


def display_path(path: Path | str) -> str:
    """A path as a Mac shows it to a person: under the home folder as ``~/…``."""
    path = Path(path)
    try:
        return str(Path("~") / path.relative_to(Path.home())) if path != Path.home() else "~"
    except ValueError:
        return str(path)


def default_songs_dir() -> Path:
    return Path.home() / "Music" / APP_NAME


def check_writable_dir(folder: Path) -> str | None:
    """None when ``folder`` can hold songs (created if missing), else a message for a person.
    A relative path is refused: it would put songs wherever the app happened to start."""
    folder = Path(folder).expanduser()
    if not folder.is_absolute():
        return f"The songs folder must be a full path, such as {default_songs_dir()}; “{str(folder)[:200]}” is not."
    if folder.exists() and not folder.is_dir():
        return f"The songs folder {folder} is a file, not a folder: choose another folder in Settings."
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"The songs folder {folder} cannot be created: {exc.strerror or exc}."
    if not folder.is_dir():
        return f"The songs folder {folder} is not a folder."
    probe = folder / f".khala-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        os.listdir(folder)
    except OSError as exc:
        return f"The songs folder {folder} is not readable and writable: {exc.strerror or exc}."
    return None
