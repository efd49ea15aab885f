"""Entry points and small behaviours: --version, typing spaces vs the Space shortcut, export."""

from __future__ import annotations

import json

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile
from PySide6.QtCore import Qt

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_app_version(tmp_path):
    env = {**os.environ, "KHALA_APP_DATA": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "app", "--version"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-1000:]


def test_space_types_in_editors_and_plays_elsewhere(qtbot, fake_window):
    w = fake_window
    w.activateWindow()
    w.compose.lyrics.edit.setFocus()
    qtbot.keyClicks(w.compose.lyrics.edit, "la la")
    assert w.compose.lyrics.text() == "la la"
    calls = []
    w.player.toggle = lambda: calls.append(1)
    w.player.song_id = -5
    w.list.setFocus()
    qtbot.keyClick(w.list, Qt.Key.Key_Space)
    assert calls == [1]


def test_export_writes_audio_and_sidecar(tmp_path):
    from app.menus import export_song

    src = tmp_path / "a.wav"
    soundfile.write(str(src), np.zeros((4410, 2)) + 0.25, 44_100)
    from app.library.store import SongRecord

    rec = SongRecord(title="b", audio_path=src, request={"tags": "Pop"}, seed=7, timings={"backbone": 1.0})
    out = export_song(rec, tmp_path / "out" / "b.flac")
    assert soundfile.info(str(out)).format == "FLAC"
    sidecar = json.loads((tmp_path / "out" / "b.flac.json").read_text())
    assert sidecar["title"] == "b" and sidecar["seed"] == 7 and sidecar["timings_s"] == {"backbone": 1.0}


def test_paths_are_shown_under_the_home_folder_as_a_mac_shows_them(qtbot, settings, tmp_path, monkeypatch):
    from app.paths import display_path
    from app.settings_dialog import SettingsDialog

    monkeypatch.setenv("HOME", str(tmp_path))
    assert display_path(tmp_path / "Music" / "Khala") == "~/Music/Khala"
    assert display_path(Path("/Volumes/USB/songs")) == "/Volumes/USB/songs" and display_path(tmp_path) == "~"
    settings.songs_dir = tmp_path / "Music" / "Khala"
    chosen: list = []
    dialog = SettingsDialog(settings, tmp_path / "model", chosen.append)
    qtbot.addWidget(dialog)
    assert (dialog.songs.text(), dialog.weights.text()) == ("~/Music/Khala", "~/model")
    dialog.songs.setText("~/Music/Other")
    dialog.weights.setText("~/other-model")
    dialog.apply()
    assert settings.songs_dir == tmp_path / "Music" / "Other" and chosen == [tmp_path / "other-model"]
