"""Settings → Engine → Khala server: the window's Generate makes the songs on a (stand-in) dispatcher
and adds them to the library like local songs, sidecar included."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "remote"))

from dispatcher_standin import FakeDispatcher  # noqa: E402

FAST = dict(poll_s=0.005, timeout_s=2.0, retry_s=0.3, stall_timeout_s=0.3, queue_timeout_s=2.0)


def remote_factory(target):
    from engine.remote.client import RemotePipeline

    assert isinstance(target, str), "with a server set, the engine is the server"
    return RemotePipeline(target, **FAST)


def test_a_song_made_on_the_server_lands_in_the_library(qtbot, settings, tmp_path):
    from conftest import fill_compose, make_window

    with FakeDispatcher() as d:
        settings.server_url = d.url
        w, _ = make_window(qtbot, settings, None, remote_factory)  # no model on this Mac: not needed
        fill_compose(w, instrumental=True)
        w.compose.duration.setValue(2)
        added: list[int] = []
        w.song_added.connect(added.append)
        w.generate()
        qtbot.waitUntil(lambda: w.job is None, timeout=20_000)
    assert len(added) == 2, w.status.text()
    for i, song_id in enumerate(sorted(added)):
        rec = w.library.get(song_id)
        sidecar = json.loads(Path(rec.sidecar_path).read_text())
        assert sidecar["engine"]["kind"] == "remote" and sidecar["engine"]["server"] == d.url
        assert rec.audio_path.is_file() and rec.duration_s > 0 and rec.timings
    assert "Done" in w.status.text()


def test_what_the_server_cannot_do_is_said_before_sending(qtbot, settings):
    from conftest import fill_compose, make_window

    with FakeDispatcher() as d:
        settings.server_url = d.url
        w, _ = make_window(qtbot, settings, None, remote_factory)
        fill_compose(w, instrumental=True)
        w.compose.advanced.set_from(w.compose.request_unchecked().__class__(tags="Pop", instrumental=True, seed=5))
        w.generate()
    assert w.job is None and "seed" in w.status.text().lower() and d.bodies == []


def test_settings_engine_choice_is_checked(qtbot, settings):
    from app.settings_dialog import SERVER, THIS_MAC, SettingsDialog

    dialog = SettingsDialog(settings, None, lambda folder: None)
    qtbot.addWidget(dialog)
    dialog.engine.setCurrentText(SERVER)
    dialog.server.setText("ftp://nope")
    dialog.apply()
    assert "http://host:8888" in dialog.error.text() and settings.server_url == ""
    dialog.server.setText("studio:8888/")
    dialog.apply()
    assert settings.server_url == "http://studio:8888"
    dialog = SettingsDialog(settings, None, lambda folder: None)
    qtbot.addWidget(dialog)
    assert dialog.engine.currentText() == SERVER and dialog.server.isEnabled()
    dialog.engine.setCurrentText(THIS_MAC)
    dialog.apply()
    assert settings.server_url == ""
